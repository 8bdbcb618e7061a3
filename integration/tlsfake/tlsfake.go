// Package tlsfake holds what the test stand-ins for cloud services
// (integration/fakeaws, integration/fakegoogle) share to serve over TLS: a
// test CA and a serving certificate it signs, a listener optionally inside a
// network namespace, and an HTTPS server that stops and waits.
package tlsfake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// Serving makes a CA ("<name> test CA") and a serving certificate it signs
// (CN name) for localhost and ips, and returns the TLS configuration that
// serves it and the CA's PEM.
func Serving(name string, ips []net.IP) (*tls.Config, []byte, error) {
	var sans []net.IP
	for _, ip := range ips {
		if !slices.ContainsFunc(sans, ip.Equal) {
			sans = append(sans, ip)
		}
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name + " test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(48 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  sans,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER, caDER}, PrivateKey: key}},
	}
	return cfg, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

// Listen listens on addr (TCP), in the network namespace at path netns when
// it is not "" (bringing its lo up), and returns the addresses the serving
// certificate must name: the loopback addresses and the address listened
// on, or every interface address when that is unspecified.
func Listen(addr, netns string) (net.Listener, []net.IP, error) {
	var ln net.Listener
	var ips []net.IP
	do := func() error {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return err
		}
		ip := ln.Addr().(*net.TCPAddr).IP
		ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		if !ip.IsUnspecified() {
			ips = append(ips, ip)
			return nil
		}
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			ln.Close()
			return err
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				ips = append(ips, n.IP)
			}
		}
		return nil
	}
	if netns == "" {
		return ln, ips, do()
	}
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		return do()
	})
	return ln, ips, err
}

// HostPort is the host to put in URLs of ln (127.0.0.1, or the specific
// address listened on) and its port.
func HostPort(ln net.Listener) (string, int) {
	addr := ln.Addr().(*net.TCPAddr)
	host := "127.0.0.1"
	if !addr.IP.IsUnspecified() {
		host = addr.IP.String()
	}
	return host, addr.Port
}

// Server serves HTTPS on a listener until Close.
type Server struct {
	srv    *http.Server
	served chan struct{}
}

// Serve serves handler over TLS with cfg on ln, discarding the server's
// error log (clients the tests make distrust it).
func Serve(ln net.Listener, cfg *tls.Config, handler http.Handler) *Server {
	s := &Server{
		srv: &http.Server{
			Handler:           handler,
			TLSConfig:         cfg,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          log.New(io.Discard, "", 0),
		},
		served: make(chan struct{}),
	}
	go func() {
		defer close(s.served)
		s.srv.ServeTLS(ln, "", "")
	}()
	return s
}

// Close closes the server and its connections and waits for it to stop.
func (s *Server) Close() {
	s.srv.Close()
	<-s.served
}
