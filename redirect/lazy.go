package redirect

import (
	"fmt"
	"sync"

	"github.com/coreos/go-iptables/iptables"
)

// lazyTables creates go-iptables on first use: creating it runs
// `iptables --version`, which a pod's ADD on the batch path never needs.
type lazyTables struct {
	family iptables.Protocol
	once   sync.Once
	ipt    *iptables.IPTables
	err    error
}

func (l *lazyTables) get() (*iptables.IPTables, error) {
	l.once.Do(func() {
		l.ipt, l.err = iptables.New(iptables.IPFamily(l.family), iptables.Timeout(5))
		if l.err != nil {
			l.err = fmt.Errorf("iptables: %w", l.err)
		}
	})
	return l.ipt, l.err
}

func (l *lazyTables) Exists(table, chain string, spec ...string) (bool, error) {
	ipt, err := l.get()
	if err != nil {
		return false, err
	}
	return ipt.Exists(table, chain, spec...)
}

func (l *lazyTables) Insert(table, chain string, pos int, spec ...string) error {
	ipt, err := l.get()
	if err != nil {
		return err
	}
	return ipt.Insert(table, chain, pos, spec...)
}

func (l *lazyTables) Append(table, chain string, spec ...string) error {
	ipt, err := l.get()
	if err != nil {
		return err
	}
	return ipt.Append(table, chain, spec...)
}

func (l *lazyTables) Delete(table, chain string, spec ...string) error {
	ipt, err := l.get()
	if err != nil {
		return err
	}
	return ipt.Delete(table, chain, spec...)
}

func (l *lazyTables) List(table, chain string) ([]string, error) {
	ipt, err := l.get()
	if err != nil {
		return nil, err
	}
	return ipt.List(table, chain)
}

func (l *lazyTables) NewChain(table, chain string) error {
	ipt, err := l.get()
	if err != nil {
		return err
	}
	return ipt.NewChain(table, chain)
}

func (l *lazyTables) ClearAndDeleteChain(table, chain string) error {
	ipt, err := l.get()
	if err != nil {
		return err
	}
	return ipt.ClearAndDeleteChain(table, chain)
}
