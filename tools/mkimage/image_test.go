package main

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/metabind/metabind/internal/ociimage"
)

// fakeTree writes files (path -> content) under dir, executables 0755.
func fakeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriteBothPlatforms assembles tiny fake rootfs and binaries for amd64
// and arm64 and reads the tarball back: one manifest a platform, each with
// the rootfs layer and the binaries at /usr/local/bin, the responder as Cmd
// and the PATH.
func TestWriteBothPlatforms(t *testing.T) {
	dir := t.TempDir()
	for _, arch := range []string{"amd64", "arm64"} {
		fakeTree(t, filepath.Join(dir, "rootfs-"+arch), map[string]string{"usr/sbin/xtables-nft-multi": "iptables " + arch})
		if err := os.Symlink("xtables-nft-multi", filepath.Join(dir, "rootfs-"+arch, "usr/sbin/iptables")); err != nil {
			t.Fatal(err)
		}
		fakeTree(t, filepath.Join(dir, "bin-"+arch), map[string]string{
			"metabind": "plugin " + arch, "metabind-responder": "responder " + arch, "metabindctl": "ctl " + arch,
		})
	}
	platforms, err := parsePlatforms("linux/amd64,linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "image.tar")
	o := options{name: "localhost/metabind:test", out: out, platforms: platforms,
		rootfs: filepath.Join(dir, "rootfs-{arch}"), bin: filepath.Join(dir, "bin-{arch}")}
	if err := write(o); err != nil {
		t.Fatal(err)
	}
	img, err := ociimage.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != o.name || len(img.Manifests) != 2 {
		t.Fatalf("image %q with %d manifests, want %q with 2", img.Name, len(img.Manifests), o.name)
	}
	for i, arch := range []string{"amd64", "arm64"} {
		m := img.Manifests[i]
		if m.Platform != (ociimage.Platform{OS: "linux", Architecture: arch}) {
			t.Errorf("manifest %d: platform %+v, want linux/%s", i, m.Platform, arch)
		}
		if m.Config.Entrypoint != nil || !slices.Equal(m.Config.Cmd, []string{"/usr/local/bin/metabind-responder"}) ||
			!slices.Equal(m.Config.Env, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}) {
			t.Errorf("%s config: %+v", arch, m.Config)
		}
		if len(m.Layers) != 2 {
			t.Fatalf("%s: %d layers, want the rootfs and the binaries", arch, len(m.Layers))
		}
		rootfs, bins := files(m.Layers[0]), files(m.Layers[1])
		if string(rootfs["usr/sbin/xtables-nft-multi"].Data) != "iptables "+arch || rootfs["usr/sbin/iptables"].Link != "xtables-nft-multi" {
			t.Errorf("%s rootfs layer: %v", arch, rootfs)
		}
		for _, name := range []string{"metabind", "metabind-responder", "metabindctl"} {
			f := bins["usr/local/bin/"+name]
			if !strings.HasSuffix(string(f.Data), " "+arch) || f.Mode != 0o755 {
				t.Errorf("%s: /usr/local/bin/%s = %q mode %o", arch, name, f.Data, f.Mode)
			}
		}
	}
}

func files(l ociimage.Layer) map[string]ociimage.File {
	m := map[string]ociimage.File{}
	for _, f := range l {
		m[f.Path] = f
	}
	return m
}

// TestAssembleRefuses: the wrong architecture's ELF binary, a missing
// responder, one directory for two platforms, and unknown platforms.
func TestAssembleRefuses(t *testing.T) {
	dir := t.TempDir()
	self, err := os.ReadFile("/proc/self/exe") // this test binary: an ELF for the host's architecture
	if err != nil {
		t.Fatal(err)
	}
	other := map[string]string{"amd64": "arm64", "arm64": "amd64"}[runtime.GOARCH]
	if other == "" {
		t.Skipf("no other architecture known for %s", runtime.GOARCH)
	}
	fakeTree(t, filepath.Join(dir, "rootfs"), map[string]string{"etc/protocols": "tcp 6"})
	fakeTree(t, filepath.Join(dir, "wrong-arch"), map[string]string{"metabind-responder": string(self)})
	fakeTree(t, filepath.Join(dir, "no-responder"), map[string]string{"metabindctl": "ctl"})
	one := []ociimage.Platform{{OS: "linux", Architecture: other}}
	two := []ociimage.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}
	for name, o := range map[string]options{
		"wrong arch":     {platforms: one, rootfs: filepath.Join(dir, "rootfs"), bin: filepath.Join(dir, "wrong-arch")},
		"no responder":   {platforms: one, rootfs: filepath.Join(dir, "rootfs"), bin: filepath.Join(dir, "no-responder")},
		"no {arch}":      {platforms: two, rootfs: filepath.Join(dir, "rootfs"), bin: filepath.Join(dir, "no-responder")},
		"missing rootfs": {platforms: one, rootfs: filepath.Join(dir, "nothing"), bin: filepath.Join(dir, "no-responder")},
	} {
		o.name = "localhost/x:y"
		if _, err := assemble(o); err == nil {
			t.Errorf("%s: assembled without an error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	for _, bad := range []string{"linux", "windows/amd64", "linux/mips", "linux/amd64,linux/amd64", "linux/arm64/v8/x"} {
		if _, err := parsePlatforms(bad); err == nil {
			t.Errorf("platforms %q accepted", bad)
		}
	}
}
