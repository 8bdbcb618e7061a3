package installer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// confExtensions are the files a runtime loads from the conf dir (containerd
// through libcni.ConfFiles, and CRI-O); it uses the lexically first. Our
// backups and temp files end otherwise, so runtimes ignore them.
var confExtensions = []string{".conf", ".conflist", ".json"}

// ErrNoConfig means the conf dir holds no file a runtime would load.
var ErrNoConfig = errors.New("the primary CNI has not written its config yet")

// confFiles returns the names of the files a runtime would load from dir,
// sorted as the runtime sorts them. A missing dir has none.
func confFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() && slices.Contains(confExtensions, filepath.Ext(e.Name())) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// primaryConf returns the names of the runtime's files; the first is the one
// the runtime uses.
func primaryConf(dir string) ([]string, error) {
	names, err := confFiles(dir)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no .conf, .conflist or .json file in %s: %w", dir, ErrNoConfig)
	}
	return names, nil
}

// loadConf parses a config file's bytes as the runtime would: a .conflist as
// a list, anything else as a single plugin converted to a list.
func loadConf(path string, data []byte) (*conflist, error) {
	var c *conflist
	var err error
	if filepath.Ext(path) == ".conflist" {
		c, err = parseConflist(data)
	} else {
		c, err = fromConf(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
