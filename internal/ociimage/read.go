package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// ReadFile reads the OCI layout tarball at path; see Read.
func ReadFile(path string) (Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return Image{}, err
	}
	defer f.Close()
	return Read(f)
}

// Read reads an OCI layout tarball as Write writes it: one manifest for
// each of the index's entries, in its order, with platform, config and
// layers (their files in path order, parent directories included). It
// checks what containerd checks on import: every blob's digest and size,
// and that the config's diff IDs are the digests of the uncompressed
// layers.
func Read(r io.Reader) (Image, error) {
	var img Image
	entries, err := readTar(r)
	if err != nil {
		return img, err
	}
	files := map[string][]byte{}
	for _, f := range entries {
		files[f.Path] = f.Data
	}
	blob := func(d descriptor) ([]byte, error) {
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
		if !ok || digest(b) != d.Digest || len(b) != d.Size {
			return nil, fmt.Errorf("ociimage: blob %s: missing, or its digest or size (%d, want %d) is wrong", d.Digest, len(b), d.Size)
		}
		return b, nil
	}
	var index struct{ Manifests []descriptor }
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		return img, fmt.Errorf("ociimage: index.json: %v, %d entries, want one image", err, len(index.Manifests))
	}
	img.Name = index.Manifests[0].Annotations["io.containerd.image.name"]
	b, err := blob(index.Manifests[0])
	var platforms struct{ Manifests []descriptor }
	if err == nil && index.Manifests[0].MediaType == MediaTypeIndex {
		err = json.Unmarshal(b, &platforms)
	} else if err == nil {
		err = fmt.Errorf("media type %s, want an image index", index.Manifests[0].MediaType)
	}
	if err != nil {
		return img, fmt.Errorf("ociimage: the image index: %w", err)
	}
	for _, md := range platforms.Manifests {
		if md.Platform == nil {
			return img, fmt.Errorf("ociimage: manifest %s without a platform", md.Digest)
		}
		var m struct {
			Config descriptor
			Layers []descriptor
		}
		var cfg struct {
			Config Config
			Rootfs struct {
				DiffIDs []string `json:"diff_ids"`
			}
		}
		b, err := blob(md)
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		if err == nil {
			b, err = blob(m.Config)
		}
		if err == nil {
			err = json.Unmarshal(b, &cfg)
		}
		if err == nil && len(cfg.Rootfs.DiffIDs) != len(m.Layers) {
			err = fmt.Errorf("%d diff IDs for %d layers", len(cfg.Rootfs.DiffIDs), len(m.Layers))
		}
		if err != nil {
			return img, fmt.Errorf("ociimage: manifest %s: %w", md.Digest, err)
		}
		manifest := Manifest{Platform: *md.Platform, Config: cfg.Config}
		for i, ld := range m.Layers {
			l, err := readLayer(blob, ld, cfg.Rootfs.DiffIDs[i])
			if err != nil {
				return img, fmt.Errorf("ociimage: %s layer %d: %w", md.Platform.Architecture, i, err)
			}
			manifest.Layers = append(manifest.Layers, l)
		}
		img.Manifests = append(img.Manifests, manifest)
	}
	return img, nil
}

func readLayer(blob func(descriptor) ([]byte, error), d descriptor, diffID string) (Layer, error) {
	zipped, err := blob(d)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(zipped))
	if err != nil {
		return nil, err
	}
	tarred, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	if digest(tarred) != diffID {
		return nil, fmt.Errorf("diff ID %s is not the uncompressed layer's digest", diffID)
	}
	return readTar(bytes.NewReader(tarred))
}

// readTar reads a tar's regular files, links and directories.
func readTar(r io.Reader) (Layer, error) {
	var l Layer
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return l, nil
		}
		if err != nil {
			return nil, err
		}
		f := File{Path: h.Name, Mode: h.Mode}
		switch h.Typeflag {
		case tar.TypeDir:
			f.Dir, f.Path = true, strings.TrimSuffix(h.Name, "/")
		case tar.TypeSymlink:
			f.Link = h.Linkname
		case tar.TypeReg:
			if f.Data, err = io.ReadAll(tr); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%s: tar entry of type %q", h.Name, h.Typeflag)
		}
		l = append(l, f)
	}
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
