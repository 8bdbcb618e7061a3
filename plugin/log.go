package plugin

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
)

// openLog returns a JSON logger writing to conf's log file, rotated by
// size (logfile.go), carrying the call's attachment. Stdout belongs to the
// CNI result, so when the file's directory cannot be made the logger falls
// back to stderr (the runtime keeps it) rather than failing the pod.
func openLog(conf *NetConf, args *skel.CmdArgs) *slog.Logger {
	var out io.Writer = os.Stderr
	if err := os.MkdirAll(filepath.Dir(conf.LogFile), 0o750); err == nil {
		out = &rotatingFile{path: conf.LogFile, maxBytes: int64(*conf.LogMaxSizeMB) << 20, backups: *conf.LogMaxBackups}
	}
	// One Write per record: slog's JSON handler writes each line whole.
	return slog.New(slog.NewJSONHandler(out, nil)).With(
		"containerID", args.ContainerID,
		"ifname", args.IfName,
		"netns", args.Netns,
	)
}
