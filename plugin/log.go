package plugin

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
)

// openLog returns a JSON logger writing to path, carrying the call's
// attachment. Stdout belongs to the CNI result, so when the file cannot be
// opened the logger falls back to stderr (the runtime keeps it) rather than
// failing the pod.
func openLog(path string, args *skel.CmdArgs) (*slog.Logger, io.Closer) {
	var out io.WriteCloser = nopCloser{os.Stderr}
	if path != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err == nil {
			if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640); err == nil {
				out = f
			}
		}
	}
	log := slog.New(slog.NewJSONHandler(out, nil)).With(
		"containerID", args.ContainerID,
		"ifname", args.IfName,
		"netns", args.Netns,
	)
	return log, out
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
