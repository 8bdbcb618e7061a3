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
	for attempt := 1; ; attempt++ {
		r, err = install(o, want)
		// The primary CNI wrote its file between our read and our write:
		// plan again from what it wrote.
		if !errors.Is(err, errConflict) || attempt == 3 {
			return r, err
		}
	}
}

func install(o Options, want json.RawMessage) (Report, error) {
	var r Report
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

// Check reports whether Install has nothing to do: the binary in BinDir
// is PluginBinary's and metabind is chained last, as wanted, in the
// conflist the runtime uses. It writes nothing (a readiness probe).
func Check(o Options) error {
	want, err := entry(o.PluginConf)
	if err != nil {
		return err
	}
	names, err := primaryConf(o.ConfDir)
	if err != nil {
		return err
	}
	p, err := planChain(o.ConfDir, names, want)
	if err != nil {
		return err
	}
	if p.changed {
		return fmt.Errorf("metabind is not chained last as wanted in %s", p.path)
	}
	if _, err := checkDatapath(p.list.primary(), o.Force); err != nil {
		return fmt.Errorf("%s: %w", p.path, err)
	}
	if o.PluginBinary != "" {
		same, err := sameBinary(o.PluginBinary, o.BinDir)
		if err != nil {
			return err
		}
		if !same {
			return fmt.Errorf("%s is not %s", filepath.Join(o.BinDir, pluginType), o.PluginBinary)
		}
	}
	return nil
}

// chainPlan is the change Install makes to the runtime's config file.
type chainPlan struct {
	path, target string // the file the runtime uses now, and the .conflist to write
	data         []byte // path's bytes
	mode         fs.FileMode
	read         fs.FileInfo // path when read: the write is refused if it changed since
	list         *conflist   // chained
	changed      bool
	// primaryOnly: path holds the primary's config alone (no metabind),
	// so its bytes are the backup uninstall restores.
	primaryOnly bool
}

// planChain reads the first of names in dir and works out the chained list.
func planChain(dir string, names []string, want json.RawMessage) (*chainPlan, error) {
	p := &chainPlan{path: filepath.Join(dir, names[0])}
	var err error
	if p.data, p.mode, p.read, err = readFileInfo(p.path); err != nil {
		return nil, err
	}
	if p.list, err = loadConf(p.path, p.data); err != nil {
		return nil, err
	}
	p.primaryOnly = !p.list.has()
	p.target = p.path
	if ext := filepath.Ext(p.path); ext != ".conflist" {
		p.target = strings.TrimSuffix(p.path, ext) + ".conflist"
		// The converted file must still be the first the runtime sees. Our
		// own earlier conversion may be there (the primary wrote its .conf
		// again, or we died before removing it): that one is replaced.
		for _, other := range names[1:] {
			if other > filepath.Base(p.target) {
				break
			}
			if other == filepath.Base(p.target) && ownConversion(p.target) {
				continue
			}
			return nil, fmt.Errorf("cannot convert %s to %s: %s is in the way", p.path, p.target, other)
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
	// The backup is the primary's latest config: taken again whenever the
	// primary has rewritten its file (without metabind), so uninstall gives
	// back what the primary wrote last.
	if err := saveBackup(p.path, p.data, p.mode, p.primaryOnly); err != nil {
		return "", false, fmt.Errorf("back up %s: %w", p.path, err)
	}
	var err2 error
	if p.target == p.path {
		err2 = writeConfIfUnchanged(p.target, p.list.encode(), p.mode, p.read)
	} else {
		err2 = writeConf(p.target, p.list.encode(), p.mode)
	}
	if err2 != nil {
		return "", false, fmt.Errorf("chain metabind into %s: %w", p.target, err2)
	}
	backup := filepath.Base(p.path) + backupSuffix
	if p.target == p.path {
		return fmt.Sprintf("chained metabind into %s (backup %s)", p.path, backup), true, nil
	}
	if err := removeIfUnchanged(p.path, p.read); err != nil {
		return "", false, fmt.Errorf("remove %s after converting it to %s: %w", p.path, p.target, err)
	}
	return fmt.Sprintf("converted %s to %s and chained metabind into it (backup %s)", p.path, p.target, backup), true, nil
}

// ownConversion reports whether the .conflist at path is one Install wrote
// from a .conf: it names metabind.
func ownConversion(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	c, err := loadConf(path, data)
	return err == nil && c.has()
}
