package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"sluice/relay/dnstest"
)

// clock is the resolver's time, moved by the test instead of waited for.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// zone is a dnstest server behind a front that, like an authoritative
// server, puts the zone's SOA in the authority section of negative
// answers (RFC 2308 3), counts the queries that reach it and can answer
// SERVFAIL.
type zone struct {
	*dnstest.Server
	front    string
	soa      dns.RR // nil: negative answers carry no SOA
	queries  atomic.Int64
	servfail atomic.Bool
}

func startZone(t *testing.T, soa string) *zone {
	t.Helper()
	z := &zone{Server: dnstest.Start(t, "127.0.0.1:0")}
	if soa != "" {
		rr, err := dns.NewRR(soa)
		if err != nil {
			t.Fatal(err)
		}
		z.soa = rr
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z.front = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		z.queries.Add(1)
		if z.servfail.Load() {
			m := new(dns.Msg)
			m.SetRcode(req, dns.RcodeServerFailure)
			w.WriteMsg(m)
			return
		}
		z.ServeDNS(&soaWriter{ResponseWriter: w, soa: z.soa}, req)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return z
}

type soaWriter struct {
	dns.ResponseWriter
	soa dns.RR
}

func (w *soaWriter) WriteMsg(m *dns.Msg) error {
	if w.soa != nil && (m.Rcode == dns.RcodeNameError || len(m.Answer) == 0) {
		m.Ns = append(m.Ns, dns.Copy(w.soa))
	}
	return w.ResponseWriter.WriteMsg(m)
}

// newResolver asks z through its front, on the test's clock.
func newResolver(z *zone, c *clock) *Resolver {
	r := New(z.front)
	r.Timeout = 2 * time.Second
	r.now = c.now
	return r
}

func txt(t *testing.T, r *Resolver, name string) string {
	t.Helper()
	v, err := r.LookupTXT(context.Background(), name)
	if IsNotFound(err) {
		return "<none>"
	}
	if err != nil {
		t.Fatalf("LookupTXT %s: %v", name, err)
	}
	return strings.Join(v, "|")
}

// TestCacheFollowsTTL: an answer is served from the cache for its TTL (a
// change on the server within it is not seen, and no query is sent), and
// fetched again after it; MaxTTL caps long TTLs; a TTL of 0 is not cached.
func TestCacheFollowsTTL(t *testing.T) {
	cases := []struct {
		name   string
		ttl    string
		maxTTL time.Duration
		within time.Duration // the old answer is still served here
		after  time.Duration // and the new one here
	}{
		{"TTL 300", "300", time.Hour, 299 * time.Second, 301 * time.Second},
		{"TTL over MaxTTL", "86400", time.Hour, time.Hour - time.Second, time.Hour + time.Second},
		{"TTL 0", "0", time.Hour, -1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			z := startZone(t, "")
			c := &clock{t: time.Unix(1_800_000_000, 0)}
			r := newResolver(z, c)
			r.MaxTTL = tc.maxTTL
			z.Add(t, `rec.zone.test. `+tc.ttl+` IN TXT "v1"`)
			if got := txt(t, r, "rec.zone.test"); got != "v1" {
				t.Fatalf("first answer %q", got)
			}
			z.Remove("rec.zone.test", 0)
			z.Add(t, `rec.zone.test. `+tc.ttl+` IN TXT "v2"`)
			if tc.within >= 0 {
				sent := z.queries.Load()
				c.advance(tc.within)
				if got := txt(t, r, "REC.Zone.Test."); got != "v1" {
					t.Fatalf("after %v: %q, want the cached v1", tc.within, got)
				}
				if z.queries.Load() != sent {
					t.Fatalf("a cached answer was asked again")
				}
				c.advance(-tc.within)
			}
			c.advance(tc.after)
			if got := txt(t, r, "rec.zone.test"); got != "v2" {
				t.Fatalf("after %v: %q, want the new v2", tc.after, got)
			}
		})
	}
}

// TestNegativeCache: NXDOMAIN and no-data answers are cached for the SOA
// minimum, bounded by the SOA's own TTL (RFC 2308 5), or for 60 s when the
// answer has no SOA; a record published meanwhile is seen after that.
func TestNegativeCache(t *testing.T) {
	cases := []struct {
		name   string
		soa    string
		exists bool // the name has records of another type (no data, not NXDOMAIN)
		ttl    time.Duration
	}{
		{"NXDOMAIN, SOA minimum 30", "zone.test. 3600 IN SOA ns.zone.test. host.zone.test. 1 7200 900 1209600 30", false, 30 * time.Second},
		{"no data, SOA minimum 30", "zone.test. 3600 IN SOA ns.zone.test. host.zone.test. 1 7200 900 1209600 30", true, 30 * time.Second},
		{"NXDOMAIN, SOA TTL below minimum", "zone.test. 20 IN SOA ns.zone.test. host.zone.test. 1 7200 900 1209600 600", false, 20 * time.Second},
		{"NXDOMAIN without SOA", "", false, 60 * time.Second},
		{"no data without SOA", "", true, 60 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			z := startZone(t, tc.soa)
			c := &clock{t: time.Unix(1_800_000_000, 0)}
			r := newResolver(z, c)
			if tc.exists {
				z.Add(t, `neg.zone.test. 300 IN A 127.0.0.2`)
			}
			if got := txt(t, r, "neg.zone.test"); got != "<none>" {
				t.Fatalf("first answer %q, want none", got)
			}
			z.Add(t, `neg.zone.test. 300 IN TXT "published"`)
			c.advance(tc.ttl - time.Second)
			if got := txt(t, r, "neg.zone.test"); got != "<none>" {
				t.Fatalf("%v after the negative answer: %q, want it still cached", tc.ttl-time.Second, got)
			}
			c.advance(2 * time.Second)
			if got := txt(t, r, "neg.zone.test"); got != "published" {
				t.Fatalf("%v after the negative answer: %q, want the published record", tc.ttl+time.Second, got)
			}
		})
	}
}

// TestFailuresAreNotCached: SERVFAIL is an error, not a missing record,
// and the next lookup asks again.
func TestFailuresAreNotCached(t *testing.T) {
	z := startZone(t, "")
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	r := newResolver(z, c)
	z.Add(t, `up.zone.test. 300 IN TXT "ok"`)
	z.servfail.Store(true)
	_, err := r.LookupTXT(context.Background(), "up.zone.test")
	if err == nil || IsNotFound(err) {
		t.Fatalf("SERVFAIL gave %v, want an error that is not \"not found\"", err)
	}
	z.servfail.Store(false)
	if got := txt(t, r, "up.zone.test"); got != "ok" {
		t.Fatalf("after the server recovered: %q", got)
	}
}

// TestZeroValueResolver: a Resolver built as a literal (no New) works and
// caches.
func TestZeroValueResolver(t *testing.T) {
	z := startZone(t, "")
	z.Add(t, `lit.zone.test. 300 IN TXT "ok"`)
	r := &Resolver{Server: z.front, Timeout: 2 * time.Second}
	for i := 0; i < 2; i++ {
		if got := txt(t, r, "lit.zone.test"); got != "ok" {
			t.Fatalf("lookup %d: %q", i, got)
		}
	}
	if n := z.queries.Load(); n != 1 {
		t.Fatalf("%d queries for two lookups, want 1 (the second from the cache)", n)
	}
}

// TestUnreachableServerError: when the DNS server cannot be reached, the
// error says so as net.Resolver would ("connection refused", "i/o
// timeout"), with the server in DNSError.Server and no local socket
// address in the text, since that text ends up in the reasons a DSN gives
// the sender.
func TestUnreachableServerError(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := pc.LocalAddr().String()
	pc.Close() // nothing answers there now
	r := &Resolver{Server: closed, Timeout: time.Second}
	_, err = r.LookupMX(context.Background(), "down.zone.test")
	var de *net.DNSError
	if !errors.As(err, &de) || IsNotFound(err) {
		t.Fatalf("got %v, want a DNS error that is not \"not found\"", err)
	}
	if de.Server != closed || !de.IsTemporary {
		t.Errorf("DNSError %+v, want Server %s and temporary", de, closed)
	}
	if de.Err == "" || strings.Contains(de.Err, "127.0.0.1") || strings.Contains(de.Err, "udp") {
		t.Errorf("DNSError.Err %q, want the cause alone (such as \"connection refused\")", de.Err)
	}
}

// The reasons a DSN gives for a connection or DNS problem say what went
// wrong without Go's operation and socket addresses.
func TestCause(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	_, refused := net.Dial("tcp", closed)
	if refused == nil {
		t.Fatalf("a connection to the closed port %s succeeded", closed)
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"dial refused", refused, "connection refused"},
		{"wrapped", fmt.Errorf("greeting: %w", refused), "connection refused"},
		{"DNS", &net.DNSError{Err: "i/o timeout", Name: "remote.test.", Server: "10.0.0.53:53", IsTimeout: true}, "i/o timeout"},
		{"end of input", fmt.Errorf("EHLO: %w", io.EOF), "the server closed the connection"},
		{"other", errors.New("unexpected AUTH LOGIN challenge"), "unexpected AUTH LOGIN challenge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Cause(tc.err); got != tc.want {
				t.Errorf("Cause(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}
