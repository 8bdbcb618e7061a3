package store

import (
	"net/netip"
	"testing"
	"time"
)

// OnReload hears of each reload that read the store, with its bindings,
// and of none when nothing was written since.
func TestViewOnReload(t *testing.T) {
	dir := t.TempDir()
	put := func(ip string) {
		t.Helper()
		s, err := Open(dir, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		err = s.Update(func(tx *Tx) error {
			return tx.Put(Binding{IP: netip.MustParseAddr(ip), ContainerID: "c-" + ip, IfName: "eth0", HostInterface: "veth-" + ip,
				Namespace: "ns", Pod: "pod-" + ip, PodUID: "uid-" + ip, Created: time.Now()})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	put("10.1.0.1")
	v := NewView(dir, 5*time.Second)
	defer v.Close()
	var heard []int
	v.OnReload = func(n int, d time.Duration, err error) {
		if err != nil || d <= 0 {
			t.Errorf("reload: %v after %v", err, d)
		}
		heard = append(heard, n)
	}
	for range 3 {
		if _, ok, err := v.Lookup(netip.MustParseAddr("10.1.0.1")); !ok || err != nil {
			t.Fatalf("lookup: %v %v", ok, err)
		}
	}
	put("10.1.0.2")
	if n, err := v.Len(); n != 2 || err != nil {
		t.Fatalf("Len %d %v", n, err)
	}
	if len(heard) != 2 || heard[0] != 1 || heard[1] != 2 {
		t.Fatalf("reloads heard %v, want [1 2]: one per write, none per lookup", heard)
	}
}
