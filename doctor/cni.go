package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/metabind/metabind/installer"
)

// pluginName is the binary's name in the CNI bin dir and its conflist type.
const pluginName = "metabind"

// checkBinary: the plugin is in the CNI bin dir, executable, and answers
// VERSION as the runtime would ask it.
func checkBinary(ctx context.Context, n *node) Result {
	path := filepath.Join(n.CNIBinDir, pluginName)
	install := "metabindctl install --cni-conf-dir " + n.CNIConfDir + " --cni-bin-dir " + n.CNIBinDir
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return failed(install, "%s is missing: the runtime cannot run metabind, and pod ADDs fail", path)
	case err != nil:
		return failed("check the CNI bin dir ("+n.CNIBinDir+")", "%v", err)
	case !fi.Mode().IsRegular():
		return failed(install, "%s is not a regular file", path)
	case fi.Mode().Perm()&0o111 == 0:
		return failed("chmod 755 "+path, "%s is not executable (mode %04o)", path, fi.Mode().Perm())
	}
	ctx, cancel := context.WithTimeout(ctx, n.Timeout)
	defer cancel()
	info, err := invoke.GetVersionInfo(ctx, path, nil)
	if err != nil {
		return failed(install+" (replaces the binary)", "%s does not answer CNI_COMMAND=VERSION: %v", path, err)
	}
	versions := info.SupportedVersions()
	if len(versions) == 0 {
		return failed(install+" (replaces the binary)", "%s answers VERSION with no supported versions", path)
	}
	return ok("%s answers VERSION: supports %s", path, strings.Join(versions, ", "))
}

// checkConflist: metabind is chained once, last, with the pod-annotations
// capability, in the file the runtime uses.
func checkConflist(_ context.Context, n *node) Result {
	c, err := installer.Inspect(n.CNIConfDir)
	install := "metabindctl install --cni-conf-dir " + n.CNIConfDir + " --cni-bin-dir " + n.CNIBinDir
	switch {
	case errors.Is(err, installer.ErrNoConfig):
		return failed("install the primary CNI, then "+install, "%v", err)
	case err != nil:
		return failed("fix the file the runtime loads (it would refuse it too)", "%v", err)
	case c.Entries == 0:
		return failed(install, "%s (the file the runtime uses) does not chain metabind: plugins %v", c.File, c.Types)
	case c.Entries > 1:
		return failed(install+" (keeps one entry)", "%s chains metabind %d times: plugins %v", c.File, c.Entries, c.Types)
	case !c.Last:
		return failed(install+"; if the primary CNI rewrites its config, keep `metabindctl install --watch` running",
			"metabind is not the last plugin in %s: plugins %v; a plugin after it can change the result it binds", c.File, c.Types)
	case !c.PodAnnotations:
		return failed(install+" (adds the capability)",
			"metabind's entry in %s lacks the capability \"io.kubernetes.cri.pod-annotations\": true; the runtime hands it no pod annotations", c.File)
	}
	return ok("%s: metabind chained last (plugins %v), with the pod-annotations capability", c.File, c.Types)
}

// checkDatapath: the primary plugin's pod traffic goes through netfilter,
// where metabind's redirect is.
func checkDatapath(_ context.Context, n *node) Result {
	c, err := installer.Inspect(n.CNIConfDir)
	if err != nil {
		return skipped("no config the runtime uses to read the primary plugin from (see conflist)")
	}
	if c.Bypass != "" {
		return failed(fmt.Sprintf("run metabind behind a primary CNI (or a %s mode) whose pod traffic passes netfilter", c.Primary),
			"primary plugin %s: %s", c.Primary, c.Bypass)
	}
	return ok("primary plugin %s passes pod traffic through netfilter", c.Primary)
}
