package ociimage

import (
	"io/fs"
	"os"
	"path/filepath"
)

// LayerFromDir is the tree under root as a layer: regular files, symlinks
// (kept as links) and directories, with their permission bits and the
// setuid, setgid and sticky bits (a /tmp of mode 1777 stays one). Other
// kinds (devices, sockets) are refused: a rootfs for an image has none.
func LayerFromDir(root string) (Layer, error) {
	var l Layer
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		f := File{Path: filepath.ToSlash(rel), Mode: unixMode(info.Mode())}
		switch {
		case info.IsDir():
			f.Dir = true
		case info.Mode()&fs.ModeSymlink != 0:
			if f.Link, err = os.Readlink(p); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if f.Data, err = os.ReadFile(p); err != nil {
				return err
			}
		default:
			return &fs.PathError{Op: "layer", Path: p, Err: fs.ErrInvalid}
		}
		l = append(l, f)
		return nil
	})
	return l, err
}

// unixMode is m's permission and special bits as the tar header (and
// chmod) spell them.
func unixMode(m fs.FileMode) int64 {
	u := int64(m.Perm())
	for bit, special := range map[fs.FileMode]int64{fs.ModeSetuid: 0o4000, fs.ModeSetgid: 0o2000, fs.ModeSticky: 0o1000} {
		if m&bit != 0 {
			u |= special
		}
	}
	return u
}
