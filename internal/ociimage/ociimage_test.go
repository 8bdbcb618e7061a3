package ociimage

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"slices"
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

// untar reads a tarball into path -> entry.
func untar(t *testing.T, r io.Reader) map[string]File {
	t.Helper()
	l, err := readTar(r)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]File{}
	for _, f := range l {
		files[f.Path] = f
	}
	return files
}

// TestWriteIsAValidLayout follows the index to every blob and checks each
// digest and size, and that the config's diff IDs are the digests of the
// uncompressed layers, as containerd does on import.
func TestWriteIsAValidLayout(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, testImage()); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for p, f := range untar(t, bytes.NewReader(buf.Bytes())) {
		files[p] = f.Data
	}
	blob := func(d descriptor) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+d.Digest[len("sha256:"):]]
		sum := sha256.Sum256(b)
		if !ok || "sha256:"+hex.EncodeToString(sum[:]) != d.Digest || len(b) != d.Size {
			t.Fatalf("blob %s: present %t, size %d want %d", d.Digest, ok, len(b), d.Size)
		}
		return b
	}
	// index.json names one image, an index of the two platforms' manifests
	// (containerd imports each entry of index.json as an image of its own).
	var top, index struct{ Manifests []descriptor }
	if err := json.Unmarshal(files["index.json"], &top); err != nil || len(top.Manifests) != 1 {
		t.Fatalf("index.json: %v, %d entries, want 1", err, len(top.Manifests))
	}
	if d := top.Manifests[0]; d.Annotations["io.containerd.image.name"] != "localhost/test/app:v1" || d.MediaType != MediaTypeIndex {
		t.Errorf("index.json's entry: media type %s, annotations %v", d.MediaType, d.Annotations)
	}
	if err := json.Unmarshal(blob(top.Manifests[0]), &index); err != nil || len(index.Manifests) != 2 {
		t.Fatalf("the image index: %v, %d manifests, want 2", err, len(index.Manifests))
	}
	for i, md := range index.Manifests {
		if md.MediaType != MediaTypeManifest || md.Platform == nil {
			t.Errorf("manifest %d: media type %s, platform %v", i, md.MediaType, md.Platform)
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
		entries := untar(t, bytes.NewReader(layer))
		if app := entries["usr/local/bin/app"]; string(app.Data) != md.Platform.Architecture+" binary" || app.Mode != 0o755 {
			t.Errorf("%s layer: app = %q", md.Platform.Architecture, app.Data)
		}
		for _, dir := range []string{"usr", "usr/local", "usr/local/bin"} {
			if !entries[dir].Dir {
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

// TestReadReadsWhatWriteWrote: every file of every layer comes back, with
// its mode, and the platforms and configs in the index's order.
func TestReadReadsWhatWriteWrote(t *testing.T) {
	want := testImage()
	want.Manifests[1].Layers[0] = append(want.Manifests[1].Layers[0], File{Path: "tmp", Dir: true, Mode: 0o1777})
	var buf bytes.Buffer
	if err := Write(&buf, want); err != nil {
		t.Fatal(err)
	}
	got, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != want.Name || len(got.Manifests) != len(want.Manifests) {
		t.Fatalf("read %q with %d manifests, want %q with %d", got.Name, len(got.Manifests), want.Name, len(want.Manifests))
	}
	for i, wm := range want.Manifests {
		gm := got.Manifests[i]
		if gm.Platform != wm.Platform || !slices.Equal(gm.Config.Entrypoint, wm.Config.Entrypoint) || len(gm.Layers) != len(wm.Layers) {
			t.Fatalf("manifest %d: %+v, want %+v", i, gm, wm)
		}
		files := map[string]File{}
		for _, f := range gm.Layers[0] {
			files[f.Path] = f
		}
		for _, wf := range wm.Layers[0] {
			gf := files[wf.Path]
			if wf.Link != "" {
				wf.Mode = 0o777
			}
			if gf.Path != wf.Path || gf.Mode != wf.Mode || gf.Link != wf.Link || gf.Dir != wf.Dir || !bytes.Equal(gf.Data, wf.Data) {
				t.Errorf("%s: read %+v, want %+v", wm.Platform.Architecture, gf, wf)
			}
		}
		if !files["usr/local"].Dir {
			t.Errorf("%s: the parent directory usr/local was not read", wm.Platform.Architecture)
		}
	}
}

// TestReadRefusesACorruptBlob: a flipped byte in a layer fails its digest.
func TestReadRefusesACorruptBlob(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, testImage()); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// The blob payloads are gzip streams: flip a byte inside the first one.
	i := bytes.Index(b, []byte{0x1f, 0x8b})
	if i < 0 {
		t.Fatal("no gzip stream in the tarball")
	}
	b[i+20] ^= 0xff
	if _, err := Read(bytes.NewReader(b)); err == nil {
		t.Error("a corrupt blob was read without an error")
	}
}
