// Package ociimage writes container images as OCI image layout tarballs,
// the format `ctr images import` and `skopeo copy oci-archive:` read, with
// no Docker daemon and no registry: `make image` and the tests that run
// pods under a real containerd build their images with it.
//
// The output is reproducible: every timestamp is the Unix epoch, files are
// owned by root and written in path order, so the same inputs give the
// same digests.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// Media types of the OCI image spec.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// epoch is every timestamp the tarballs carry.
var epoch = time.Unix(0, 0).UTC()

// File is one entry of a layer: a regular file (Data), a symlink (Link) or
// a directory (Dir). Path is relative to the image's root.
type File struct {
	Path string
	Mode int64 // permission bits, and 04000/02000/01000 for setuid/setgid/sticky; 0 means 0644 for files, 0755 for directories
	Data []byte
	Link string
	Dir  bool
}

// Layer is one filesystem layer. Parent directories are added as needed.
type Layer []File

// Platform is the OS and CPU a manifest is for (GOOS/GOARCH spelling).
type Platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
}

// Config is the part of the image configuration a runtime acts on.
type Config struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
	User       string   `json:"User,omitempty"`
}

// Manifest is the image for one platform.
type Manifest struct {
	Platform Platform
	Config   Config
	Layers   []Layer
}

// Image is a named image of one or more platforms (one manifest each); the
// tarball's index lists them all, so a runtime picks its own.
type Image struct {
	// Name is the reference the runtime gives the image on import, e.g.
	// "ghcr.io/metabind/metabind:v0.4.0".
	Name      string
	Manifests []Manifest
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Platform    *Platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// WriteFile writes img to path as an OCI layout tarball, through a
// temporary file renamed into place, so a reader never sees half an image.
func WriteFile(file string, img Image) error {
	tmp, err := os.CreateTemp(path.Dir(file), "."+path.Base(file)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := Write(tmp, img); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// Write writes img as an OCI image layout tarball to w.
func Write(w io.Writer, img Image) error {
	if img.Name == "" || len(img.Manifests) == 0 {
		return fmt.Errorf("ociimage: an image needs a name and at least one manifest")
	}
	blobs := map[string][]byte{}
	blob := func(mediaType string, b []byte) descriptor {
		d := digest(b)
		blobs["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")] = b
		return descriptor{MediaType: mediaType, Digest: d, Size: len(b)}
	}
	var manifests []descriptor
	for _, m := range img.Manifests {
		var layers []descriptor
		var diffIDs []string
		for i, l := range m.Layers {
			tarred, err := tarLayer(l)
			if err != nil {
				return fmt.Errorf("ociimage: %s/%s layer %d: %w", m.Platform.OS, m.Platform.Architecture, i, err)
			}
			diffIDs = append(diffIDs, digest(tarred))
			zipped, err := gzipped(tarred)
			if err != nil {
				return err
			}
			layers = append(layers, blob(MediaTypeLayer, zipped))
		}
		config, err := json.Marshal(map[string]any{
			"created":      epoch.Format(time.RFC3339),
			"architecture": m.Platform.Architecture,
			"os":           m.Platform.OS,
			"variant":      m.Platform.Variant,
			"config":       m.Config,
			"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
		})
		if err != nil {
			return err
		}
		manifest, err := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     MediaTypeManifest,
			"config":        blob(MediaTypeConfig, config),
			"layers":        layers,
		})
		if err != nil {
			return err
		}
		d := blob(MediaTypeManifest, manifest)
		p := m.Platform
		d.Platform = &p
		manifests = append(manifests, d)
	}
	// The platforms' manifests are one image: index.json names a single
	// image index that lists them. (containerd makes an image of each entry
	// of index.json, so entries of one name would replace each other.)
	imageIndex, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": MediaTypeIndex, "manifests": manifests})
	if err != nil {
		return err
	}
	top := blob(MediaTypeIndex, imageIndex)
	// containerd names the image it imports after these annotations.
	top.Annotations = map[string]string{
		"io.containerd.image.name":          img.Name,
		"org.opencontainers.image.ref.name": img.Name,
	}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": MediaTypeIndex, "manifests": []descriptor{top}})
	if err != nil {
		return err
	}
	files := Layer{
		{Path: "oci-layout", Data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{Path: "index.json", Data: index},
	}
	for name, b := range blobs {
		files = append(files, File{Path: name, Data: b})
	}
	return writeTar(w, files)
}

// tarLayer is l as an uncompressed tar; its digest is the layer's diff ID.
func tarLayer(l Layer) ([]byte, error) {
	var buf bytes.Buffer
	if err := writeTar(&buf, l); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func gzipped(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeTar writes files in path order, each parent directory first.
func writeTar(w io.Writer, files Layer) error {
	byPath := map[string]File{}
	for _, f := range files {
		p := path.Clean(strings.TrimPrefix(f.Path, "/"))
		if p == "." || strings.HasPrefix(p, "../") {
			return fmt.Errorf("bad path %q", f.Path)
		}
		f.Path = p
		if _, dup := byPath[p]; dup {
			return fmt.Errorf("%s given twice", p)
		}
		byPath[p] = f
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = File{Path: d, Dir: true}
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		f := byPath[p]
		h := &tar.Header{Name: p, Mode: f.Mode, ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case f.Dir:
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		case f.Link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, 0o777
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}
