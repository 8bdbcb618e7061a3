package installer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Install copies the metabind binary into BinDir, then chains metabind last
// into the conflist the runtime uses (converting a single-plugin .conf into a
// .conflist). It is idempotent: with nothing to do it writes nothing. Before
// anything is written the config is read and checked, so a malformed config
// or a primary metabind cannot work behind changes nothing.
func Install(o Options) (Report, error) {
	var r Report
	if o.PluginBinary == "" {
		return r, errors.New("no plugin binary to install")
	}
	want, err := entry(o.PluginConf)
	if err != nil {
		return r, err
	}
	names, err := primaryConf(o.ConfDir)
	if err != nil {
		return r, err
	}
	p, err := planChain(o.ConfDir, names, want)
	if err != nil {
		return r, err
	}
	warning, err := checkDatapath(p.list.primary(), o.Force)
	if err != nil {
		return r, fmt.Errorf("%s: %w", p.path, err)
	}
	if warning != "" {
		o.logger().Warn(warning, "conf", p.path)
		r.add(warning, false)
	}
	// The binary first: the conflist must never name a binary that is not
	// there yet, or an older one.
	line, changed, err := copyBinary(o.PluginBinary, o.BinDir)
	if err != nil {
		return r, err
	}
	r.add(line, changed)
	line, changed, err = p.apply()
	if err != nil {
		return r, err
	}
	r.add(line, changed)
	return r, nil
}

// chainPlan is the change Install makes to the runtime's config file.
type chainPlan struct {
	path, target string // the file the runtime uses now, and the .conflist to write
	data         []byte // path's bytes
	mode         fs.FileMode
	list         *conflist // chained
	changed      bool
}

// planChain reads the first of names in dir and works out the chained list.
func planChain(dir string, names []string, want json.RawMessage) (*chainPlan, error) {
	p := &chainPlan{path: filepath.Join(dir, names[0])}
	var err error
	if p.data, p.mode, err = readFile(p.path); err != nil {
		return nil, err
	}
	if p.list, err = loadConf(p.path, p.data); err != nil {
		return nil, err
	}
	p.target = p.path
	if ext := filepath.Ext(p.path); ext != ".conflist" {
		p.target = strings.TrimSuffix(p.path, ext) + ".conflist"
		// The converted file must still be the first the runtime sees.
		for _, other := range names[1:] {
			if other <= filepath.Base(p.target) {
				return nil, fmt.Errorf("cannot convert %s to %s: %s is in the way", p.path, p.target, other)
			}
		}
	}
	p.changed = p.list.chain(want) || p.target != p.path
	return p, nil
}

// apply writes the plan: the backup, the chained list, and for a converted
// .conf the removal of the .conf once the .conflist is in place.
func (p *chainPlan) apply() (line string, changed bool, err error) {
	if !p.changed {
		return fmt.Sprintf("already chained metabind into %s", p.path), false, nil
	}
	if err := saveBackup(p.path, p.data, p.mode); err != nil {
		return "", false, fmt.Errorf("back up %s: %w", p.path, err)
	}
	if err := writeConf(p.target, p.list.encode(), p.mode); err != nil {
		return "", false, fmt.Errorf("chain metabind into %s: %w", p.target, err)
	}
	backup := filepath.Base(p.path) + backupSuffix
	if p.target == p.path {
		return fmt.Sprintf("chained metabind into %s (backup %s)", p.path, backup), true, nil
	}
	if err := os.Remove(p.path); err != nil {
		return "", false, fmt.Errorf("remove %s after converting it to %s: %w", p.path, p.target, err)
	}
	return fmt.Sprintf("converted %s to %s and chained metabind into it (backup %s)", p.path, p.target, backup), true, nil
}
