package integration

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/metabind/metabind/internal/ociimage"
)

const (
	imageRef     = "localhost/metabind/metabind:image-test"
	imageVersion = "image-test"
)

// TestImage builds the DaemonSet's image with `make image` for amd64 and
// arm64, checks both manifests' files (static binaries and an iptables
// whose loader and libraries are all in the image, for the right CPU),
// imports the image into a real containerd and runs the host's platform:
// iptables, iptables-save and iptables-restore (and the ip6tables ones)
// work in a container of their own netns, and write rules the host's
// iptables reads; the three binaries start.
func TestImage(t *testing.T) {
	requireEnv(t)
	tools := lookContainerdTools(t)
	for _, tool := range []string{"make", "apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("needs %s (make image runs it)", tool)
			if os.Getenv("CI") == "true" {
				t.Fatalf("cannot run under CI: %s", msg)
			}
			t.Skip("skipped: " + msg)
		}
	}
	start := time.Now()
	tarball := buildImage(t)
	t.Logf("make image in %v", time.Since(start).Round(time.Millisecond))
	img, err := ociimage.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != imageRef || len(img.Manifests) != 2 {
		t.Fatalf("image %q with %d manifests, want %s for amd64 and arm64", img.Name, len(img.Manifests), imageRef)
	}
	for _, m := range img.Manifests {
		checkImageFiles(t, m)
	}

	n := newNode(t, chain{name: "ptp", subnet: "10.197.41.0/24"})
	cd := startContainerd(t, n, tools)
	cd.importImage(t, tarball)
	podNS, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { podNS.Close(); testutils.UnmountNS(podNS) })
	// iptables-restore reads a file bind-mounted at /rules: ctr run passes
	// no end of file on stdin to a container without a terminal.
	rules := t.TempDir()
	run := func(rulesFile string, args ...string) string {
		t.Helper()
		if rulesFile != "" {
			if err := os.WriteFile(filepath.Join(rules, "rules"), []byte(rulesFile), 0o644); err != nil {
				t.Fatal(err)
			}
			args = append(args, "/rules/rules")
		}
		return cd.runInImage(t, podNS.Path(), rules, args...)
	}

	if out := run("", "/usr/local/bin/metabind"); !strings.Contains(out, "metabind "+imageVersion+":") {
		t.Errorf("metabind (no CNI_COMMAND) said %q, want its about line with version %s", out, imageVersion)
	}
	if out := run("", "metabind-responder", "--help"); !strings.Contains(out, "-config") {
		t.Errorf("metabind-responder --help said %q", out)
	}
	if out, err := cd.runInImageErr(podNS.Path(), rules, "metabindctl", "--help"); !strings.Contains(out, "usage: metabindctl") {
		t.Errorf("metabindctl --help: %v, said %q", err, out)
	}

	// What the responder's repair loop does through go-iptables: the version
	// (nf_tables), a chain and a commented DNAT rule, a save, a restore.
	if out := run("", "iptables", "--version"); !strings.Contains(out, "nf_tables") {
		t.Errorf("iptables --version: %q, want the nf_tables backend", out)
	}
	run("", "iptables", "-t", "nat", "-N", "METABIND-IMAGE")
	run("", "iptables", "-t", "nat", "-A", "METABIND-IMAGE", "-d", "169.254.169.254/32", "-p", "tcp", "--dport", "80",
		"-m", "comment", "--comment", "metabind:image", "-j", "DNAT", "--to-destination", "127.0.0.1:8080")
	rule := `-A METABIND-IMAGE -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment "metabind:image" -j DNAT --to-destination 127.0.0.1:8080`
	if out := run("", "iptables-save", "-t", "nat"); !strings.Contains(out, rule) {
		t.Errorf("iptables-save -t nat in the image:\n%s\nwant %s", out, rule)
	}
	run("*filter\n:METABIND-IMAGE-F - [0:0]\n-A METABIND-IMAGE-F -p udp -m multiport --dports 53,853 -j ACCEPT\nCOMMIT\n",
		"iptables-restore", "--noflush")
	run("*nat\n:METABIND-IMAGE6 - [0:0]\n-A METABIND-IMAGE6 -d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -j DNAT --to-destination [::1]:8080\nCOMMIT\n",
		"ip6tables-restore", "--noflush")
	if out := run("", "ip6tables-save", "-t", "nat"); !strings.Contains(out, "-A METABIND-IMAGE6 -d fd00:ec2::254/128") {
		t.Errorf("ip6tables-save -t nat in the image:\n%s", out)
	}
	// The host's iptables (nft too) reads what the image's wrote.
	for cmd, want := range map[string]string{"iptables-save": rule, "ip6tables-save": "METABIND-IMAGE6"} {
		out, err := exec.Command("nsenter", "--net="+podNS.Path(), "--", cmd).CombinedOutput()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("the host's %s in the container's netns: %v\n%s\nwant %s", cmd, err, out, want)
		}
	}
	if out, _ := exec.Command("nsenter", "--net="+podNS.Path(), "--", "iptables", "-S", "METABIND-IMAGE-F").CombinedOutput(); !strings.Contains(string(out), "--dports 53,853") {
		t.Errorf("the rule iptables-restore wrote in the image: the host's iptables -S says\n%s", out)
	}
}

// buildImage runs `make image` for both platforms into a directory of the
// test's (the rootfs cache is the repository's .cache/image).
func buildImage(t *testing.T) string {
	t.Helper()
	root, _ := filepath.Abs("..")
	bin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "make", "-C", root, "image", "BIN="+bin, "IMAGE="+imageRef,
		"VERSION="+imageVersion, "PLATFORMS=linux/amd64,linux/arm64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	return filepath.Join(bin, "image", "metabind.oci.tar")
}

// checkImageFiles checks one platform's files: the three binaries static
// ELF for its CPU at /usr/local/bin; iptables, iptables-save,
// iptables-restore and the ip6tables ones linked to xtables-nft-multi, an
// ELF for its CPU whose loader and libraries (and those of the extension
// rules use) are in the image.
func checkImageFiles(t *testing.T, m ociimage.Manifest) {
	arch := m.Platform.Architecture
	machine, triplet := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch],
		map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[arch]
	if triplet == "" {
		t.Fatalf("manifest for %s, want amd64 or arm64", arch)
	}
	files := map[string]ociimage.File{}
	for _, l := range m.Layers {
		for _, f := range l {
			files[f.Path] = f
		}
	}
	if len(m.Config.Cmd) != 1 || m.Config.Cmd[0] != "/usr/local/bin/metabind-responder" {
		t.Errorf("%s: Cmd %q", arch, m.Config.Cmd)
	}
	openELF := func(p string) *elf.File {
		t.Helper()
		f, ok := resolveInImage(files, p)
		if !ok {
			t.Errorf("%s: %s is not in the image", arch, p)
			return nil
		}
		ef, err := elf.NewFile(bytes.NewReader(f.Data))
		if err != nil || ef.Machine != machine {
			t.Errorf("%s: %s: %v, machine %v; want an ELF for %v", arch, p, err, ef, machine)
			return nil
		}
		return ef
	}
	for _, name := range []string{"metabind", "metabind-responder", "metabindctl"} {
		if ef := openELF("/usr/local/bin/" + name); ef != nil && interpreter(ef) != "" {
			t.Errorf("%s: %s is dynamically linked (%s), want static", arch, name, interpreter(ef))
		}
	}
	for _, cmd := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		if l := files["usr/sbin/"+cmd].Link; l != "xtables-nft-multi" {
			t.Errorf("%s: /usr/sbin/%s links to %q, want xtables-nft-multi", arch, cmd, l)
		}
	}
	xtables := openELF("/usr/sbin/xtables-nft-multi")
	if xtables == nil {
		return
	}
	if _, ok := resolveInImage(files, interpreter(xtables)); !ok {
		t.Errorf("%s: xtables-nft-multi's loader %s is not in the image", arch, interpreter(xtables))
	}
	libDir := "/usr/lib/" + triplet
	elves := []*elf.File{xtables}
	for _, ext := range []string{"libxt_comment.so", "libxt_tcp.so", "libxt_multiport.so", "libxt_DNAT.so", "libxt_standard.so"} {
		elves = append(elves, openELF(libDir+"/xtables/"+ext))
	}
	for seen := map[string]bool{}; len(elves) > 0; elves = elves[1:] {
		if elves[0] == nil {
			continue
		}
		libs, _ := elves[0].ImportedLibraries()
		for _, lib := range libs {
			if !seen[lib] {
				seen[lib] = true
				elves = append(elves, openELF(libDir+"/"+lib))
			}
		}
	}
	for _, p := range []string{"/etc/protocols", "/etc/ssl/certs/ca-certificates.crt"} {
		if _, ok := resolveInImage(files, p); !ok {
			t.Errorf("%s: no %s", arch, p)
		}
	}
	if f := files["tmp"]; !f.Dir || f.Mode != 0o1777 {
		t.Errorf("%s: /tmp: %+v, want a directory of mode 1777", arch, f)
	}
}

// resolveInImage follows symbolic links, of the file and of the
// directories on its way (/lib -> usr/lib), to a regular file.
func resolveInImage(files map[string]ociimage.File, p string) (ociimage.File, bool) {
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	for hops, cur := 0, ""; len(parts) > 0 && hops < 40; {
		next := path.Join(cur, parts[0])
		parts = parts[1:]
		f, ok := files[next]
		switch {
		case !ok:
			return f, false
		case f.Link != "":
			hops++
			target := f.Link
			if !path.IsAbs(target) {
				target = path.Join("/", cur, target)
			}
			parts = append(strings.Split(strings.TrimPrefix(path.Clean(target), "/"), "/"), parts...)
			cur = ""
		case len(parts) == 0:
			return f, !f.Dir
		default:
			cur = next
		}
	}
	return ociimage.File{}, false
}

func interpreter(ef *elf.File) string {
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			p.ReadAt(b, 0)
			return strings.TrimRight(string(b), "\x00")
		}
	}
	return ""
}

// runInImage runs args in a container of the test image, in the network
// namespace netns, with CAP_NET_ADMIN (as the DaemonSet's responder has)
// and the directory rules at /rules, and returns its output; it fails the
// test if the command fails.
func (cd *containerd) runInImage(t *testing.T, netns, rules string, args ...string) string {
	t.Helper()
	out, err := cd.runInImageErr(netns, rules, args...)
	if err != nil {
		t.Fatalf("in the image, %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (cd *containerd) runInImageErr(netns, rules string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	id := fmt.Sprintf("image-test-%d", time.Now().UnixNano())
	ctrArgs := append([]string{"--address", cd.socket, "--namespace", "k8s.io", "run", "--rm",
		"--runc-binary", cd.tools.runc, "--runc-root", filepath.Join(cd.dir, "runc"),
		"--cap-add", "CAP_NET_ADMIN", "--with-ns", "network:" + netns,
		"--mount", "type=bind,src=" + rules + ",dst=/rules,options=rbind:ro",
		"--platform", "linux/" + runtime.GOARCH, imageRef, id}, args...)
	out, err := exec.CommandContext(ctx, cd.tools.ctr, ctrArgs...).CombinedOutput()
	return string(out), err
}
