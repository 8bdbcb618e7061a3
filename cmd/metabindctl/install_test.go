package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallCommands drives install and uninstall through run, as the
// DaemonSet's init container and preStop hook would.
func TestInstallCommands(t *testing.T) {
	root := t.TempDir()
	confDir, binDir := filepath.Join(root, "net.d"), filepath.Join(root, "bin")
	plugin, pluginConf := filepath.Join(root, "metabind"), filepath.Join(root, "metabind.json")
	for _, d := range []string{confDir, binDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, data string) {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(plugin, "\x7fELF metabind")
	write(pluginConf, `{"type":"metabind","stateDir":"/var/lib/metabind","logFile":"/var/log/metabind/plugin.log"}`)
	dirs := []string{"--cni-conf-dir", confDir, "--cni-bin-dir", binDir}
	install := append([]string{"install", "--plugin-binary", plugin, "--plugin-conf", pluginConf}, dirs...)
	call := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(args, &out, &errOut)
		return out.String(), errOut.String(), err
	}

	if _, _, err := call(install...); err == nil || !strings.Contains(err.Error(), "has not written its config yet") {
		t.Errorf("no config: %v", err)
	}
	conflist := filepath.Join(confDir, "10-calico.conflist")
	orig := `{"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[{"type":"calico"},{"type":"portmap"}]}`
	write(conflist, orig)
	out, _, err := call(install...)
	want := "copied " + plugin + " to " + filepath.Join(binDir, "metabind") + "\n" +
		"chained metabind into " + conflist + " (backup 10-calico.conflist.metabind-backup)\n"
	if err != nil || out != want {
		t.Errorf("install: %v\n%s\nwant\n%s", err, out, want)
	}
	if b, _ := os.ReadFile(conflist); !strings.Contains(string(b), `"logFile": "/var/log/metabind/plugin.log"`) ||
		!strings.Contains(string(b), `"io.kubernetes.cri.pod-annotations": true`) {
		t.Errorf("conflist:\n%s", b)
	}
	if out, _, err = call(install...); err != nil || !strings.Contains(out, "already chained metabind into "+conflist) {
		t.Errorf("second install: %v %s", err, out)
	}

	out, _, err = call(append([]string{"uninstall"}, dirs...)...)
	if err != nil || !strings.Contains(out, "restored "+conflist+" from its backup") || !strings.Contains(out, "removed "+filepath.Join(binDir, "metabind")) {
		t.Errorf("uninstall: %v %s", err, out)
	}
	if b, _ := os.ReadFile(conflist); string(b) != orig {
		t.Errorf("after uninstall:\n%s", b)
	}

	// Refusals: each an error run returns, which main turns into exit 1.
	write(conflist, `{"cniVersion":"0.3.1","name":"cilium","plugins":[{"type":"cilium-cni"}]}`)
	write(filepath.Join(root, "bridge.json"), `{"type":"bridge"}`)
	write(filepath.Join(root, "bad.json"), `{"type":`)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{install, "bypasses netfilter"},
		{append([]string{"install", "--plugin-binary", plugin, "--plugin-conf", filepath.Join(root, "bridge.json")}, dirs...), `"type" must be "metabind"`},
		{append([]string{"install", "--plugin-binary", plugin, "--plugin-conf", filepath.Join(root, "bad.json")}, dirs...), "not valid JSON"},
		{append([]string{"install", "--force", "--plugin-binary", filepath.Join(root, "nope")}, dirs...), "plugin binary"},
		{append([]string{"uninstall", "extra"}, dirs...), "uninstall takes no arguments"},
	} {
		if _, _, err := call(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
	_, stderr, err := call(append(install, "--force")...)
	if err != nil || !strings.HasPrefix(stderr, "warning: chaining metabind behind cilium-cni anyway") {
		t.Errorf("--force: %v %q", err, stderr)
	}
	if _, _, err := call("install", "--no-such-flag"); err != errUsage {
		t.Errorf("bad flag: %v", err)
	}
}

func TestDefaultPluginBinaryIsNextToMetabindctl(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	if got, want := defaultPluginBinary(), filepath.Join(filepath.Dir(self), "metabind"); got != want {
		t.Errorf("%s, want %s", got, want)
	}
}
