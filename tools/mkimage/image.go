package main

import (
	"bytes"
	"debug/elf"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/metabind/metabind/internal/ociimage"
)

// The image's configuration: the DaemonSet names its commands
// (metabindctl install --watch in the init container), and the responder
// is what runs when it names none.
var (
	imageCmd = []string{"/usr/local/bin/metabind-responder"}
	imageEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
)

// binPrefix is where the -bin files go.
const binPrefix = "usr/local/bin/"

// archPlaceholder in -rootfs and -bin stands for the platform's architecture.
const archPlaceholder = "{arch}"

// elfMachine is the ELF machine of each architecture's binaries.
var elfMachine = map[string]elf.Machine{
	"amd64":   elf.EM_X86_64,
	"arm64":   elf.EM_AARCH64,
	"arm":     elf.EM_ARM,
	"386":     elf.EM_386,
	"ppc64le": elf.EM_PPC64,
	"s390x":   elf.EM_S390,
	"riscv64": elf.EM_RISCV,
}

type options struct {
	name, out   string
	platforms   []ociimage.Platform
	rootfs, bin string // directories; archPlaceholder stands for the architecture
}

// parsePlatforms reads "linux/amd64,linux/arm64/v8".
func parsePlatforms(list string) ([]ociimage.Platform, error) {
	var ps []ociimage.Platform
	seen := map[string]bool{}
	for _, s := range strings.Split(list, ",") {
		parts := strings.Split(strings.TrimSpace(s), "/")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("platform %q: want os/arch[/variant]", s)
		}
		p := ociimage.Platform{OS: parts[0], Architecture: parts[1]}
		if len(parts) == 3 {
			p.Variant = parts[2]
		}
		if _, ok := elfMachine[p.Architecture]; !ok || p.OS != "linux" {
			return nil, fmt.Errorf("platform %q: only linux on %s", s, strings.Join(slices.Sorted(maps.Keys(elfMachine)), ", "))
		}
		if seen[p.Architecture] {
			return nil, fmt.Errorf("platform %q given twice", p.Architecture)
		}
		seen[p.Architecture] = true
		ps = append(ps, p)
	}
	return ps, nil
}

func platformString(p ociimage.Platform) string {
	return strings.TrimSuffix(p.OS+"/"+p.Architecture+"/"+p.Variant, "/")
}

// assemble reads each platform's rootfs and binaries into an image.
func assemble(o options) (ociimage.Image, error) {
	if len(o.platforms) > 1 && (!strings.Contains(o.rootfs, archPlaceholder) || !strings.Contains(o.bin, archPlaceholder)) {
		return ociimage.Image{}, fmt.Errorf("-rootfs and -bin must contain %s for more than one platform", archPlaceholder)
	}
	img := ociimage.Image{Name: o.name}
	for _, p := range o.platforms {
		rootfsDir := strings.ReplaceAll(o.rootfs, archPlaceholder, p.Architecture)
		rootfs, err := ociimage.LayerFromDir(rootfsDir)
		if err != nil {
			return img, fmt.Errorf("%s rootfs: %w", platformString(p), err)
		}
		bins, err := binLayer(strings.ReplaceAll(o.bin, archPlaceholder, p.Architecture), p.Architecture)
		if err != nil {
			return img, fmt.Errorf("%s binaries: %w", platformString(p), err)
		}
		img.Manifests = append(img.Manifests, ociimage.Manifest{
			Platform: p,
			Config:   ociimage.Config{Cmd: imageCmd, Env: imageEnv},
			Layers:   []ociimage.Layer{rootfs, bins},
		})
	}
	return img, nil
}

// binLayer is the files under dir at /usr/local/bin. Every ELF file must be
// for arch, and the command the image runs must be there.
func binLayer(dir, arch string) (ociimage.Layer, error) {
	l, err := ociimage.LayerFromDir(dir)
	if err != nil {
		return nil, err
	}
	hasCmd := false
	for i, f := range l {
		if !f.Dir && f.Link == "" && bytes.HasPrefix(f.Data, []byte(elf.ELFMAG)) {
			ef, err := elf.NewFile(bytes.NewReader(f.Data))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.Path, err)
			}
			if ef.Machine != elfMachine[arch] {
				return nil, fmt.Errorf("%s is for %s, not %s (%s)", f.Path, ef.Machine, arch, elfMachine[arch])
			}
		}
		l[i].Path = binPrefix + f.Path
		hasCmd = hasCmd || "/"+l[i].Path == imageCmd[0]
	}
	if !hasCmd {
		return nil, fmt.Errorf("no %s in %s", path.Base(imageCmd[0]), dir)
	}
	return l, nil
}
