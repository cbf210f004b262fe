package dnscheck

import (
	"context"
	"net"
	"strings"
	"testing"

	"sluice/dkim"
	"sluice/relay/dnstest"
	"sluice/relay/resolver"
)

const egress = "192.0.2.10"

// good publishes everything right for example.test and returns the keys.
func setup(t *testing.T) (*dnstest.Server, []*dkim.Key) {
	t.Helper()
	srv := dnstest.Start(t, "127.0.0.1:0")
	ring, err := dkim.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ring.Generate("example.test", "s1", "both")
	if err != nil {
		t.Fatal(err)
	}
	srv.Add(t,
		`example.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`_dmarc.example.test. 300 IN TXT "v=DMARC1; p=reject"`,
		`10.2.0.192.in-addr.arpa. 300 IN PTR mail.example.test.`,
		`mail.example.test. 300 IN A 192.0.2.10`,
	)
	for _, k := range keys {
		srv.Add(t, k.Name()+`. 300 IN TXT "`+k.TXT()+`"`)
	}
	return srv, keys
}

func run(t *testing.T, srv *dnstest.Server, keys []*dkim.Key) []Finding {
	t.Helper()
	return Check(context.Background(), Input{Domain: "example.test", Keys: keys, Egress: []net.IP{net.ParseIP(egress)},
		HELO: "mail.example.test", Resolver: resolver.New(srv.Addr)})
}

func find(fs []Finding, check string, st Status, mention string) bool {
	for _, f := range fs {
		if f.Check == check && f.Status == st && strings.Contains(f.Detail, mention) && (st == OK || f.Fix != "") {
			return true
		}
	}
	return false
}

func TestAllGood(t *testing.T) {
	srv, keys := setup(t)
	fs := run(t, srv, keys)
	if Worst(fs) != OK {
		t.Fatalf("findings: %+v", fs)
	}
	for _, c := range []string{"spf", "dkim", "dmarc", "ptr"} {
		if !find(fs, c, OK, "") {
			t.Errorf("no ok finding for %s: %+v", c, fs)
		}
	}
}

func TestFindings(t *testing.T) {
	cases := []struct {
		name    string
		mutate  func(t *testing.T, srv *dnstest.Server, keys []*dkim.Key) []*dkim.Key
		check   string
		status  Status
		mention string
	}{
		{"missing SPF", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			s.Remove("example.test", 0)
			return k
		}, "spf", Fail, "no SPF record"},
		{"SPF without our IP", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			s.Remove("example.test", 0)
			s.Add(t, `example.test. 300 IN TXT "v=spf1 ip4:198.51.100.1 -all"`)
			return k
		}, "spf", Fail, "does not authorize 192.0.2.10"},
		{"SPF softfail", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			s.Remove("example.test", 0)
			s.Add(t, `example.test. 300 IN TXT "v=spf1 ip4:198.51.100.1 ~all"`)
			return k
		}, "spf", Warn, "softfail"},
		{"too many lookups", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			s.Remove("example.test", 0)
			s.Add(t, `example.test. 300 IN TXT "v=spf1 ip4:192.0.2.10 include:i1.example.test -all"`)
			for i := 1; i <= 11; i++ {
				next := "include:i" + string(rune('a'+i)) + ".example.test"
				name := "i" + string(rune('a'+i-1)) + ".example.test."
				if i == 1 {
					name = "i1.example.test."
				}
				s.Add(t, name+` 300 IN TXT "v=spf1 a:h`+string(rune('a'+i))+`.example.test `+next+` -all"`)
			}
			return k
		}, "spf", Fail, "more than 10 DNS lookups"},
		{"two SPF records", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			s.Add(t, `example.test. 300 IN TXT "v=spf1 -all"`)
			return k
		}, "spf", Fail, "2 SPF records"},
		{"DKIM record missing", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			s.Remove(k[0].Name(), 0)
			return k
		}, "dkim", Fail, "is not published"},
		{"DKIM record mismatch", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			other, _ := dkim.Open(t.TempDir())
			ok, _ := other.Generate("example.test", "s1", k[0].Algo)
			s.Remove(k[0].Name(), 0)
			s.Add(t, k[0].Name()+`. 300 IN TXT "`+ok[0].TXT()+`"`)
			return k
		}, "dkim", Fail, "different public key"},
		{"no DKIM key", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			return nil
		}, "dkim", Fail, "no DKIM key"},
		{"no DMARC", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			s.Remove("_dmarc.example.test", 0)
			return k
		}, "dmarc", Warn, "no DMARC record"},
		{"DMARC reject without alignment", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			s.Remove("example.test", 0)
			s.Add(t, `example.test. 300 IN TXT "v=spf1 -all"`)
			return nil
		}, "dmarc", Fail, "neither DKIM nor SPF"},
		{"missing PTR", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			s.Remove("10.2.0.192.in-addr.arpa", 0)
			return k
		}, "ptr", Fail, "no PTR record"},
		{"PTR not forward-confirmed", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			s.Remove("mail.example.test", 0)
			s.Add(t, `mail.example.test. 300 IN A 198.51.100.7`)
			return k
		}, "ptr", Fail, "does not resolve back"},
		{"PTR not matching HELO", func(t *testing.T, s *dnstest.Server, k []*dkim.Key) []*dkim.Key {
			s.Remove("10.2.0.192.in-addr.arpa", 0)
			s.Add(t, `10.2.0.192.in-addr.arpa. 300 IN PTR host-10.isp.test.`, `host-10.isp.test. 300 IN A 192.0.2.10`)
			return k
		}, "ptr", Warn, "not the HELO name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, keys := setup(t)
			keys = tc.mutate(t, srv, keys)
			fs := run(t, srv, keys)
			if !find(fs, tc.check, tc.status, tc.mention) {
				t.Fatalf("no %s %s finding mentioning %q in:\n%+v", tc.status, tc.check, tc.mention, fs)
			}
			if tc.status == Fail && Worst(fs) != Fail {
				t.Fatalf("worst status %v, want FAIL", Worst(fs))
			}
		})
	}
}
