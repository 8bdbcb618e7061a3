package kubenode

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/metabind/metabind/integration/kubeapi"
	"github.com/metabind/metabind/integration/testproc"
)

// startCoreDNS runs CoreDNS in the node's netns with corefile and waits
// until it answers at DNSAddress.
func (n *Node) startCoreDNS(corefile string) {
	t := n.t
	t.Helper()
	dir := filepath.Join(n.Dir, "coredns")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	n.coredns = testproc.New("coredns", filepath.Join(dir, "coredns.log"),
		n.tools.nsenter, "--net="+n.NetNSPath, "--", n.tools.coredns, "-conf", conf)
	if err := n.coredns.Start(n.spawn); err != nil {
		t.Fatalf("kubenode: %v", err)
	}
	err := poll(startTimeout, func() (bool, string, error) {
		if !n.coredns.Running() {
			return false, "", fmt.Errorf("coredns exited (%v); log:\n%s", n.coredns.Err(), n.coredns.Tail(40))
		}
		err := n.dnsAnswers()
		return err == nil, fmt.Sprint(err), nil
	})
	if err != nil {
		t.Fatalf("kubenode: CoreDNS at %s: %v", n.DNSAddress, err)
	}
}

// dnsAnswers asks DNSAddress for the root's NS records from the node's
// netns: any answer (a hosts-only Corefile's SERVFAIL included) shows the
// server serves.
func (n *Node) dnsAnswers() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := kubeapi.DialIn(n.NetNSPath)(ctx, "udp", netip.AddrPortFrom(n.DNSAddress, 53).String())
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	id := uint16(time.Now().UnixNano())
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		return err
	}
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("."), Type: dnsmessage.TypeNS, Class: dnsmessage.ClassINET}); err != nil {
		return err
	}
	msg, err := b.Finish()
	if err != nil {
		return err
	}
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		m, err := conn.Read(buf)
		if err != nil {
			return err
		}
		var p dnsmessage.Parser
		if h, err := p.Start(buf[:m]); err == nil && h.ID == id && h.Response {
			return nil
		}
	}
}

// Resolver asks the DNS server at server (port 53) from inside the network
// namespace at netnsPath, as a process there whose resolv.conf names it
// would: a pod's netns and its nameserver, the node's and DNSAddress.
// Names are best given fully qualified (a trailing dot): the search list
// and ndots are the test process's own.
func Resolver(netnsPath string, server netip.Addr) *net.Resolver {
	dial := kubeapi.DialIn(netnsPath)
	addr := netip.AddrPortFrom(server, 53).String()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dial(ctx, network, addr)
		},
	}
}
