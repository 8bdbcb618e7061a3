// Package fakedns is a nameserver for tests: it answers A queries for the
// names it is given over UDP, and NXDOMAIN for every other name.
package fakedns

import (
	"net"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// Server answers on one UDP socket until Close.
type Server struct {
	conn  net.PacketConn
	names map[string]netip.Addr // lower case, fully qualified ("metadata.google.internal.")
}

// Serve answers on conn with names' addresses.
func Serve(conn net.PacketConn, names map[string]netip.Addr) *Server {
	s := &Server{conn: conn, names: map[string]netip.Addr{}}
	for n, a := range names {
		s.names[strings.ToLower(strings.TrimSuffix(n, "."))+"."] = a
	}
	go s.loop()
	return s
}

// Addr is where it answers.
func (s *Server) Addr() netip.AddrPort { return s.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Close stops it.
func (s *Server) Close() error { return s.conn.Close() }

func (s *Server) loop() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		var q dnsmessage.Message
		if q.Unpack(buf[:n]) != nil || len(q.Questions) != 1 {
			continue
		}
		m := s.answer(q)
		if out, err := m.Pack(); err == nil {
			s.conn.WriteTo(out, from)
		}
	}
}

func (s *Server) answer(q dnsmessage.Message) dnsmessage.Message {
	question := q.Questions[0]
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: q.ID, Response: true, Authoritative: true, RecursionDesired: q.RecursionDesired},
		Questions: q.Questions,
	}
	addr, ok := s.names[strings.ToLower(question.Name.String())]
	if !ok {
		m.RCode = dnsmessage.RCodeNameError
		return m
	}
	if question.Type == dnsmessage.TypeA && addr.Is4() {
		m.Answers = []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: question.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 30},
			Body:   &dnsmessage.AResource{A: addr.As4()},
		}}
	}
	return m
}
