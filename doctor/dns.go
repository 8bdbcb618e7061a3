package doctor

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/dns/dnsmessage"
)

// The name GCE clients look the metadata server up by, and where it must
// lead a pod: metabind redirects that address to the responder.
const (
	metadataName = "metadata.google.internal."
	metadataIP   = "169.254.169.254"
)

// checkDNS: the pod's nameserver (the cluster DNS the kubelet writes into
// the pod's resolv.conf), asked from inside the pod's network namespace,
// answers metadata.google.internal with 169.254.169.254. The query is sent
// by hand rather than through Go's resolver, which would answer from the
// node's /etc/hosts (where GCE images list the name) before asking.
func checkDNS(ctx context.Context, n *node) Result {
	if n.PodNetNS == "" {
		return skipped("no --pod-netns: give a pod's network namespace (/proc/PID/ns/net of a process in the pod)")
	}
	if _, err := os.Stat(n.PodNetNS); err != nil {
		return failed("give --pod-netns a pod's network namespace: /proc/PID/ns/net of a process in the pod (crictl inspectp shows the sandbox's)", "%v", err)
	}
	conf := n.PodResolvConf
	if conf == "" {
		conf = defaultResolvConf(n.PodNetNS)
	}
	server, err := firstNameserver(conf)
	if err != nil {
		return failed("give the pod's resolv.conf with --pod-resolv-conf", "%v", err)
	}
	addrs, err := lookupA(ctx, n.PodNetNS, server, metadataName, n.Timeout)
	fix := fmt.Sprintf("make the cluster DNS answer %s with %s: apply deploy/coredns-metadata.yaml (CoreDNS hosts block)", strings.TrimSuffix(metadataName, "."), metadataIP)
	if err != nil {
		return failed(fix, "asking %s (%s) from %s: %v", server, conf, n.PodNetNS, err)
	}
	want := netip.MustParseAddr(metadataIP)
	for _, a := range addrs {
		if a == want {
			return ok("%s (nameserver of %s) answers %s from %s", server, conf, addrs, n.PodNetNS)
		}
	}
	return failed(fix, "%s (nameserver of %s) answers %s, not %s", server, conf, addrs, metadataIP)
}

// defaultResolvConf is the pod's own resolv.conf when the netns path names
// a process (/proc/PID/ns/net), else the node's.
func defaultResolvConf(netns string) string {
	if dir, ok := strings.CutSuffix(netns, "/ns/net"); ok && strings.HasPrefix(netns, "/proc/") {
		return filepath.Join(dir, "root", "etc", "resolv.conf")
	}
	return "/etc/resolv.conf"
}

// firstNameserver is the first nameserver of a resolv.conf, as port 53.
func firstNameserver(path string) (netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			a, err := netip.ParseAddr(fields[1])
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("%s: nameserver %q: %w", path, fields[1], err)
			}
			return netip.AddrPortFrom(a, 53), nil
		}
	}
	if err := sc.Err(); err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPort{}, fmt.Errorf("%s names no nameserver", path)
}

// lookupA asks server for name's A records over UDP from a socket made in
// the network namespace netns.
func lookupA(ctx context.Context, netns string, server netip.AddrPort, name string, timeout time.Duration) ([]netip.Addr, error) {
	var conn net.Conn
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		var err error
		conn, err = (&net.Dialer{}).DialContext(ctx, "udp", server.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var idb [2]byte
	rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	packed, err := q.Pack()
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	if _, err := conn.Write(packed); err != nil {
		return nil, err
	}
	buf := make([]byte, 1232)
	for {
		size, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		var m dnsmessage.Message
		if err := m.Unpack(buf[:size]); err != nil || m.ID != id || !m.Response {
			continue // not the answer to this query
		}
		switch m.RCode {
		case dnsmessage.RCodeSuccess:
		case dnsmessage.RCodeNameError:
			return nil, fmt.Errorf("NXDOMAIN: the nameserver does not know %s", name)
		default:
			return nil, fmt.Errorf("answer %v", m.RCode)
		}
		var out []netip.Addr
		for _, a := range m.Answers {
			if r, ok := a.Body.(*dnsmessage.AResource); ok {
				out = append(out, netip.AddrFrom4(r.A))
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("no A record")
		}
		return out, nil
	}
}
