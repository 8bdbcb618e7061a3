package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"testing"
)

func testImage() Image {
	return Image{Name: "localhost/test/app:v1", Manifests: []Manifest{
		{Platform: Platform{OS: "linux", Architecture: "amd64"}, Config: Config{Entrypoint: []string{"/usr/local/bin/app"}},
			Layers: []Layer{{{Path: "usr/local/bin/app", Mode: 0o755, Data: []byte("amd64 binary")}, {Path: "usr/sbin/iptables", Link: "xtables-nft-multi"}}}},
		{Platform: Platform{OS: "linux", Architecture: "arm64"}, Config: Config{Entrypoint: []string{"/usr/local/bin/app"}},
			Layers: []Layer{{{Path: "usr/local/bin/app", Mode: 0o755, Data: []byte("arm64 binary")}}}},
	}}
}

// untar reads a tarball into name -> header and content.
func untar(t *testing.T, r io.Reader) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	heads, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return heads, data
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		heads[h.Name], data[h.Name] = h, b
	}
}

// TestWriteIsAValidLayout follows the index to every blob and checks each
// digest and size, and that the config's diff IDs are the digests of the
// uncompressed layers, as containerd does on import.
func TestWriteIsAValidLayout(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, testImage()); err != nil {
		t.Fatal(err)
	}
	_, files := untar(t, bytes.NewReader(buf.Bytes()))
	blob := func(d descriptor) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+d.Digest[len("sha256:"):]]
		sum := sha256.Sum256(b)
		if !ok || "sha256:"+hex.EncodeToString(sum[:]) != d.Digest || len(b) != d.Size {
			t.Fatalf("blob %s: present %t, size %d want %d", d.Digest, ok, len(b), d.Size)
		}
		return b
	}
	var index struct{ Manifests []descriptor }
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 2 {
		t.Fatalf("index.json: %v, %d manifests", err, len(index.Manifests))
	}
	for i, md := range index.Manifests {
		if md.Annotations["io.containerd.image.name"] != "localhost/test/app:v1" || md.Platform == nil {
			t.Errorf("manifest %d: annotations %v platform %v", i, md.Annotations, md.Platform)
		}
		var m struct {
			Config descriptor
			Layers []descriptor
		}
		json.Unmarshal(blob(md), &m)
		var cfg struct {
			Architecture string
			Rootfs       struct {
				DiffIDs []string `json:"diff_ids"`
			}
		}
		json.Unmarshal(blob(m.Config), &cfg)
		if cfg.Architecture != md.Platform.Architecture || len(cfg.Rootfs.DiffIDs) != len(m.Layers) {
			t.Fatalf("config of %s: %+v", md.Platform.Architecture, cfg)
		}
		zr, err := gzip.NewReader(bytes.NewReader(blob(m.Layers[0])))
		if err != nil {
			t.Fatal(err)
		}
		layer, _ := io.ReadAll(zr)
		sum := sha256.Sum256(layer)
		if cfg.Rootfs.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
			t.Errorf("%s: diff ID %s is not the uncompressed layer's digest", md.Platform.Architecture, cfg.Rootfs.DiffIDs[0])
		}
		heads, data := untar(t, bytes.NewReader(layer))
		if string(data["usr/local/bin/app"]) != md.Platform.Architecture+" binary" || heads["usr/local/bin/app"].Mode != 0o755 {
			t.Errorf("%s layer: app = %q", md.Platform.Architecture, data["usr/local/bin/app"])
		}
		for _, dir := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
			if h := heads[dir]; h == nil || h.Typeflag != tar.TypeDir {
				t.Errorf("%s layer: parent directory %s missing", md.Platform.Architecture, dir)
			}
		}
	}
}

func TestWriteIsReproducible(t *testing.T) {
	var a, b bytes.Buffer
	if err := Write(&a, testImage()); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, testImage()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("the same image written twice differs")
	}
}

func TestWriteRefusesBadInput(t *testing.T) {
	for name, img := range map[string]Image{
		"no name":      {Manifests: testImage().Manifests},
		"no manifests": {Name: "x"},
		"escaping path": {Name: "x", Manifests: []Manifest{{Platform: Platform{OS: "linux", Architecture: "amd64"},
			Layers: []Layer{{{Path: "../etc/passwd", Data: []byte("x")}}}}}},
	} {
		if err := Write(io.Discard, img); err == nil {
			t.Errorf("%s: written without an error", name)
		}
	}
}
