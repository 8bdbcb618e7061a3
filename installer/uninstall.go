package installer

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Uninstall removes metabind's entry from every .conflist in ConfDir, then
// the binary from BinDir. A list that, without metabind, equals its backup
// (for a converted .conf: the backup's conversion) gets the backup's exact
// bytes and name back. It is idempotent.
func Uninstall(o Options) (Report, error) {
	var r Report
	names, err := confFiles(o.ConfDir)
	if err != nil {
		return r, err
	}
	for _, name := range names {
		if filepath.Ext(name) != ".conflist" { // Install only ever writes .conflist files
			continue
		}
		path := filepath.Join(o.ConfDir, name)
		data, mode, err := readFile(path)
		if err != nil {
			return r, err
		}
		list, err := loadConf(path, data)
		if err != nil {
			if bytes.Contains(data, []byte(`"`+pluginType+`"`)) {
				// It may name metabind: keep the binary it may need.
				return r, err
			}
			o.logger().Warn("skipping a config that does not parse", "err", err)
			continue
		}
		if !list.unchain() {
			continue
		}
		line, err := unchainFile(path, list, mode)
		if err != nil {
			return r, err
		}
		r.add(line, true)
	}
	if !r.Changed {
		r.add(fmt.Sprintf("no conflist in %s names metabind", o.ConfDir), false)
	}
	// The binary last, once no conflist names it.
	line, changed, err := removeBinary(o.BinDir)
	if err != nil {
		return r, err
	}
	r.add(line, changed)
	return r, nil
}

// unchainFile writes list (path's list without metabind): the original
// bytes from a backup that matches it, else list itself; then removes the
// backups.
func unchainFile(path string, list *conflist, mode fs.FileMode) (string, error) {
	stripped := list.encode()
	base := strings.TrimSuffix(path, ".conflist")
	backups := []string{path, base + ".conf", base + ".json"} // the file's own, then a converted .conf's
	for i, orig := range backups {
		bak, bakMode, err := readFile(orig + backupSuffix)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		if !backupMatches(orig, bak, stripped) {
			continue
		}
		if i > 0 && exists(orig) {
			// The primary wrote its .conf again since: that is its config
			// now, newer than the backup; only our conversion goes.
			if err := os.Remove(path); err != nil {
				return "", err
			}
			return fmt.Sprintf("removed %s: %s, newer than its backup, is the primary's config", path, orig), removeBackups(backups)
		}
		if err := writeConf(orig, bak, bakMode); err != nil {
			return "", fmt.Errorf("restore %s: %w", orig, err)
		}
		line := fmt.Sprintf("removed metabind from %s: restored %s from its backup", path, orig)
		if i > 0 { // the .conf is back; the .conflist made from it goes
			if err := os.Remove(path); err != nil {
				return "", err
			}
			line += fmt.Sprintf(" and removed %s", path)
		}
		return line, removeBackups(backups)
	}
	if len(list.plugins) == 0 { // metabind was all of it; an empty list breaks the runtime
		if err := os.Remove(path); err != nil {
			return "", err
		}
		return fmt.Sprintf("removed %s: metabind was its only plugin", path), removeBackups(backups)
	}
	if err := writeConf(path, stripped, mode); err != nil {
		return "", fmt.Errorf("remove metabind from %s: %w", path, err)
	}
	return fmt.Sprintf("removed metabind from %s", path), removeBackups(backups)
}

// backupMatches reports whether the backup of orig, as the runtime reads it,
// is the list we are about to write.
func backupMatches(orig string, bak, stripped []byte) bool {
	c, err := loadConf(orig, bak)
	return err == nil && jsonEqual(c.encode(), stripped)
}

func removeBackups(origs []string) error {
	for _, orig := range origs {
		if err := os.Remove(orig + backupSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
