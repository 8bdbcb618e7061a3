package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/metabind/metabind/responder/issuer"
)

// checkKeys: the issuer's key files (the signing key, the retired keys'
// directory and its files) are only the owner's, and the owner is root,
// as the responder runs. Anything else lets another user read or plant
// a key; the responder refuses such files too.
func checkKeys(_ context.Context, n *node) Result {
	signing := issuer.SigningKeyPath(n.StateDir)
	if _, err := os.Lstat(signing); errors.Is(err, os.ErrNotExist) {
		return warned("start metabind-responder: it creates the key at its first start",
			"no signing key at %s yet", signing)
	}
	paths := []string{signing}
	retired := issuer.RetiredKeysPath(n.StateDir)
	if _, err := os.Lstat(retired); err == nil {
		paths = append(paths, retired)
		files, _ := filepath.Glob(filepath.Join(retired, "*.pem"))
		paths = append(paths, files...)
	}
	var problems, fixes []string
	for _, p := range paths {
		problem, fix := keyFileProblem(p)
		if problem != "" {
			problems = append(problems, problem)
			fixes = append(fixes, fix)
		}
	}
	if len(problems) > 0 {
		return failed(strings.Join(fixes, "; "), "%s", firstFew(problems))
	}
	return ok("%s: mode 0600 (directories 0700) or stricter, owned by root", plural(len(paths), "key file", "key files and directories"))
}

// keyFileProblem is what is wrong with one key file or directory, and the
// command that fixes it.
func keyFileProblem(path string) (problem, fix string) {
	fi, err := os.Lstat(path)
	if err != nil {
		return err.Error(), "check " + path
	}
	want := fs.FileMode(0o600)
	if fi.IsDir() {
		want = 0o700
	} else if !fi.Mode().IsRegular() {
		return fmt.Sprintf("%s is not a regular file", path), "replace " + path + " with the key file itself"
	}
	if perm := fi.Mode().Perm(); perm&^want != 0 {
		return fmt.Sprintf("%s has mode %04o: other users can access it", path, perm), fmt.Sprintf("chmod %o %s", want, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
		return fmt.Sprintf("%s belongs to uid %d, not root", path, st.Uid), "chown root " + path
	}
	return "", ""
}
