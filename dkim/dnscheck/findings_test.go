package dnscheck

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"sluice/dkim"
	"sluice/relay/dnstest"
	"sluice/relay/resolver"
)

// failingDNS serves srv's records on its own loopback port, except that
// names in fail get SERVFAIL (a broken or overloaded name server).
type failingDNS struct {
	Addr string
	mu   sync.Mutex
	fail map[string]bool
}

func startFailing(t *testing.T, srv *dnstest.Server, names ...string) *failingDNS {
	t.Helper()
	f := &failingDNS{fail: map[string]bool{}}
	f.failNames(names...)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.Addr = pc.LocalAddr().String()
	s := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		if len(req.Question) == 1 {
			f.mu.Lock()
			bad := f.fail[strings.ToLower(req.Question[0].Name)]
			f.mu.Unlock()
			if bad {
				m := new(dns.Msg)
				m.SetRcode(req, dns.RcodeServerFailure)
				w.WriteMsg(m)
				return
			}
		}
		srv.ServeDNS(w, req)
	})}
	go s.ActivateAndServe()
	t.Cleanup(func() { s.Shutdown() })
	return f
}

func (f *failingDNS) failNames(names ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range names {
		f.fail[strings.ToLower(dns.Fqdn(n))] = true
	}
}

// TestResolverFailureIsNotAMissingRecord: a SERVFAIL for one record is a
// finding of its own ("could not check ...; retry"), never the claim that
// the record is missing, and never a FAIL.
func TestResolverFailureIsNotAMissingRecord(t *testing.T) {
	cases := []struct {
		name    string
		fail    func(keys []*dkim.Key) []string
		check   string
		mention string
		never   string // what must not be claimed
	}{
		{"SPF TXT", func([]*dkim.Key) []string { return []string{"example.test"} }, "spf", "could not check", "no SPF record"},
		{"DKIM TXT", func(k []*dkim.Key) []string { return []string{k[0].Name()} }, "dkim", "could not check", "is not published"},
		{"DMARC TXT", func([]*dkim.Key) []string { return []string{"_dmarc.example.test"} }, "dmarc", "could not check", "no DMARC record"},
		{"PTR", func([]*dkim.Key) []string { return []string{"10.2.0.192.in-addr.arpa"} }, "ptr", "could not check", "no PTR record"},
		{"PTR forward A", func([]*dkim.Key) []string { return []string{"mail.example.test"} }, "ptr", "could not check", "does not resolve back"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, keys := setup(t)
			f := startFailing(t, srv, tc.fail(keys)...)
			r := resolver.New(f.Addr)
			fs := Check(context.Background(), Input{Domain: "example.test", Keys: keys, Egress: []net.IP{net.ParseIP(egress)},
				HELO: "mail.example.test", Resolver: r})
			if !find(fs, tc.check, Error, tc.mention) {
				t.Errorf("no %s finding saying %q: %+v", tc.check, tc.mention, fs)
			}
			for _, f := range fs {
				if strings.Contains(f.Detail, tc.never) {
					t.Errorf("a resolver failure is reported as %q: %+v", tc.never, f)
				}
				if f.Status == Error && !strings.Contains(f.Fix, "retry") {
					t.Errorf("an unchecked finding does not say to retry: %+v", f)
				}
			}
			if Worst(fs) == Fail {
				t.Errorf("a resolver failure makes a FAIL: %+v", fs)
			}
		})
	}
}

// TestDMARCOrganizationalDomain: a subdomain without its own _dmarc
// record is governed by its organizational domain's (RFC 7489 6.6.3),
// with sp= when set; adkim/aspf decide whether a signature by another
// domain of the organization aligns.
func TestDMARCOrganizationalDomain(t *testing.T) {
	srv := dnstest.Start(t, "127.0.0.1:0")
	ring, err := dkim.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	own, err := ring.Generate("shop.example.test", "s1", "rsa")
	if err != nil {
		t.Fatal(err)
	}
	parent, err := ring.Generate("example.test", "p1", "rsa")
	if err != nil {
		t.Fatal(err)
	}
	srv.Add(t,
		`shop.example.test. 300 IN TXT "v=spf1 ip4:192.0.2.10 -all"`,
		`news.example.test. 300 IN TXT "v=spf1 -all"`,
		own[0].Name()+`. 300 IN TXT "`+own[0].TXT()+`"`,
		parent[0].Name()+`. 300 IN TXT "`+parent[0].TXT()+`"`,
		`10.2.0.192.in-addr.arpa. 300 IN PTR mail.example.test.`,
		`mail.example.test. 300 IN A 192.0.2.10`,
	)
	check := func(domain string, keys, fallback []*dkim.Key) []Finding {
		return Check(context.Background(), Input{Domain: domain, Keys: keys, FallbackKeys: fallback, Egress: []net.IP{net.ParseIP(egress)},
			HELO: "mail.example.test", Resolver: resolver.New(srv.Addr)})
	}
	cases := []struct {
		name     string
		dmarc    string
		domain   string
		keys     []*dkim.Key
		fallback []*dkim.Key
		status   Status
		mention  string
	}{
		{"subdomain uses the org record", "v=DMARC1; p=reject", "shop.example.test", own, nil, OK, "_dmarc.example.test"},
		{"sp= governs subdomains", "v=DMARC1; p=none; sp=reject", "news.example.test", nil, nil, Fail, "p=reject"},
		{"fallback key of the org domain aligns relaxed", "v=DMARC1; p=reject", "news.example.test", nil, parent, OK, "DKIM"},
		{"fallback key of the org domain does not align strict", "v=DMARC1; p=reject; adkim=s", "news.example.test", nil, parent, Fail, "adkim=s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv.Remove("_dmarc.example.test", 0)
			srv.Add(t, `_dmarc.example.test. 300 IN TXT "`+tc.dmarc+`"`)
			fs := check(tc.domain, tc.keys, tc.fallback)
			if !find(fs, "dmarc", tc.status, tc.mention) {
				t.Fatalf("no %v dmarc finding mentioning %q:\n%+v", tc.status, tc.mention, fs)
			}
		})
	}
}

// TestIPv6Egress: an IPv6 egress address needs an ip6: SPF mechanism and
// a PTR in ip6.arpa that resolves back through AAAA.
func TestIPv6Egress(t *testing.T) {
	srv, keys := setup(t)
	const v6ptr = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa."
	srv.Remove("example.test", dns.TypeTXT)
	srv.Add(t, `example.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 ip6:::1 -all"`,
		v6ptr+` 300 IN PTR mail.example.test.`, `mail.example.test. 300 IN AAAA ::1`)
	run6 := func() []Finding {
		return Check(context.Background(), Input{Domain: "example.test", Keys: keys, Egress: []net.IP{net.ParseIP(egress), net.ParseIP("::1")},
			HELO: "mail.example.test", Resolver: resolver.New(srv.Addr)})
	}
	fs := run6()
	if Worst(fs) != OK || !find(fs, "ptr", OK, "::1 has forward-confirmed PTR mail.example.test") || !find(fs, "spf", OK, "authorizes ::1") {
		t.Fatalf("IPv6 egress published right, findings:\n%+v", fs)
	}
	t.Run("no ip6 in SPF", func(t *testing.T) {
		srv.Remove("example.test", dns.TypeTXT)
		srv.Add(t, `example.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`)
		fs := run6()
		if !find(fs, "spf", Fail, "does not authorize ::1") {
			t.Fatalf("findings:\n%+v", fs)
		}
		for _, f := range fs {
			if f.Check == "spf" && f.Status == Fail && !strings.Contains(f.Fix, "ip6:::1") {
				t.Errorf("fix does not name the ip6: mechanism: %+v", f)
			}
		}
	})
	t.Run("no ip6.arpa PTR", func(t *testing.T) {
		srv.Remove(v6ptr, 0)
		if fs := run6(); !find(fs, "ptr", Fail, "::1 has no PTR record") {
			t.Fatalf("findings:\n%+v", fs)
		}
	})
	t.Run("PTR without AAAA", func(t *testing.T) {
		srv.Add(t, v6ptr+` 300 IN PTR mail.example.test.`)
		srv.Remove("mail.example.test", dns.TypeAAAA)
		fs := run6()
		if !find(fs, "ptr", Fail, "does not resolve back to ::1") {
			t.Fatalf("findings:\n%+v", fs)
		}
		for _, f := range fs {
			if f.Check == "ptr" && f.Status == Fail && !strings.Contains(f.Fix, "AAAA") {
				t.Errorf("fix does not name an AAAA record: %+v", f)
			}
		}
	})
}
