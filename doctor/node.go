package doctor

import (
	"errors"
	"os"
	"sync"

	"github.com/metabind/metabind/responder"
	"github.com/metabind/metabind/store"
)

// node is what several checks read, each read once.
type node struct {
	Options

	storeOnce sync.Once
	store     storeState

	configOnce sync.Once
	config     *responder.Config
	configErr  error // errNoConfig when there is no file
}

// storeState is one read of the binding store.
type storeState struct {
	missing         bool // no store: no ADD has run (or another stateDir)
	version, compat int
	bindings        []store.Binding
	unreadable      []store.UnreadableRecord
	bases           []store.Base
	err             error
}

func (n *node) readStore() storeState {
	n.storeOnce.Do(func() {
		s := &n.store
		if _, err := os.Stat(store.DBPath(n.StateDir)); errors.Is(err, os.ErrNotExist) {
			s.missing = true
			return
		}
		s.err = store.Read(n.StateDir, n.Timeout, func(tx *store.Tx) error {
			s.version, s.compat = tx.Versions()
			err := tx.ForEach(func(b store.Binding) error {
				s.bindings = append(s.bindings, b)
				return nil
			})
			s.unreadable = tx.Unreadable()
			s.bases = tx.Bases()
			return err
		})
	})
	return n.store
}

var errNoConfig = errors.New("no configuration file")

// loadConfig reads the responder's configuration as the responder does.
func (n *node) loadConfig() (*responder.Config, error) {
	n.configOnce.Do(func() {
		if _, err := os.Stat(n.ConfigFile); errors.Is(err, os.ErrNotExist) {
			n.configErr = errNoConfig
			return
		}
		n.config, n.configErr = responder.LoadConfig(n.ConfigFile)
	})
	return n.config, n.configErr
}
