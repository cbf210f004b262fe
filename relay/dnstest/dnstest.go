// Package dnstest runs a real DNS server (miekg/dns) on loopback for tests:
// MX, TXT (SPF, DKIM, DMARC, MTA-STS), A/AAAA, PTR and DNS block-list
// answers come from records the test adds in zone-file syntax.
package dnstest

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Server answers from its records over UDP and TCP on one address.
type Server struct {
	Addr string

	mu      sync.RWMutex
	records map[string][]dns.RR // lower-case FQDN -> records
	udp     *dns.Server
	tcp     *dns.Server
}

// Start serves on addr ("127.0.0.1:0" picks a free port; the same port is
// used for TCP).
func Start(t testing.TB, addr string) *Server {
	t.Helper()
	s, err := Listen(addr)
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Listen is Start without a testing.TB. With port 0, UDP picks the port
// and TCP takes the same one; if that one is taken for TCP, another port
// is tried.
func Listen(addr string) (*Server, error) {
	_, port, _ := net.SplitHostPort(addr)
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, err
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			if port == "0" && try < 20 {
				continue
			}
			return nil, err
		}
		s := &Server{Addr: pc.LocalAddr().String(), records: map[string][]dns.RR{}}
		s.udp = &dns.Server{PacketConn: pc, Handler: s}
		s.tcp = &dns.Server{Listener: l, Handler: s}
		go s.udp.ActivateAndServe()
		go s.tcp.ActivateAndServe()
		return s, nil
	}
}

// Close stops the server.
func (s *Server) Close() {
	s.udp.Shutdown()
	s.tcp.Shutdown()
}

// Add adds records in zone-file syntax, e.g.
// "example.test. 300 IN MX 10 mx.example.test." Long TXT values may be
// given as one quoted string; they are split into 255-byte strings.
func (s *Server) Add(t testing.TB, lines ...string) {
	t.Helper()
	for _, line := range lines {
		if err := s.AddLine(line); err != nil {
			t.Fatalf("dnstest: %q: %v", line, err)
		}
	}
}

// AddLine adds one record.
func (s *Server) AddLine(line string) error {
	rr, err := dns.NewRR(line)
	if err != nil {
		return err
	}
	if txt, ok := rr.(*dns.TXT); ok {
		var split []string
		for _, v := range txt.Txt {
			for len(v) > 255 {
				split = append(split, v[:255])
				v = v[255:]
			}
			split = append(split, v)
		}
		txt.Txt = split
	}
	name := strings.ToLower(rr.Header().Name)
	s.mu.Lock()
	s.records[name] = append(s.records[name], rr)
	s.mu.Unlock()
	return nil
}

// Remove deletes every record of name (and type, when rrtype is not 0).
func (s *Server) Remove(name string, rrtype uint16) {
	name = strings.ToLower(dns.Fqdn(name))
	s.mu.Lock()
	defer s.mu.Unlock()
	var kept []dns.RR
	for _, rr := range s.records[name] {
		if rrtype != 0 && rr.Header().Rrtype != rrtype {
			kept = append(kept, rr)
		}
	}
	s.records[name] = kept
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		s.mu.RLock()
		rrs, exists := s.records[name]
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, dns.Copy(rr))
			} else if rr.Header().Rrtype == dns.TypeCNAME {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		s.mu.RUnlock()
		if !exists && !s.hasSubdomain(name) {
			m.Rcode = dns.RcodeNameError
		}
	}
	w.WriteMsg(m)
}

// hasSubdomain reports an empty non-terminal (NOERROR, not NXDOMAIN).
func (s *Server) hasSubdomain(name string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for n := range s.records {
		if strings.HasSuffix(n, "."+name) {
			return true
		}
	}
	return false
}

// Resolver returns a net.Resolver that asks only this server.
func (s *Server) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		d := net.Dialer{Timeout: 2 * time.Second}
		return d.DialContext(ctx, network, s.Addr)
	}}
}
