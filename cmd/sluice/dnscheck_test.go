package main

// Tests of "sluice dns check" through the real binary: the findings it
// prints for a sending domain published in a real DNS server on loopback
// (relay/dnstest), IPv4 and IPv6 egress addresses, and its exit status:
// 0 when receivers would take the mail, 1 when something would make them
// reject it.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"sluice/relay/dnstest"
)

// dcV6PTR is the ip6.arpa name of ::1.
const dcV6PTR = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa."

// dcSetup writes a configuration that sends from 127.0.0.1 and ::1 as
// mail.dc.test and asks the DNS server at resolverAddr, creates the DKIM
// keys of dc.test with the CLI, and returns a handle for the CLI and the
// key records to publish.
func dcSetup(t *testing.T, resolverAddr string) (*sluiceServer, []dkimRecord) {
	t.Helper()
	s := &sluiceServer{t: t, dir: t.TempDir()}
	s.configPath = filepath.Join(s.dir, "sluice.toml")
	s.dataDir = filepath.Join(s.dir, "data")
	cfg := fmt.Sprintf("hostname = \"mail.dc.test\"\ndata_dir = %q\n\n[dns]\nresolver = %q\n\n[relay]\nhelo = \"mail.dc.test\"\nsource_ips = [\"127.0.0.1\", \"::1\"]\n",
		s.dataDir, resolverAddr)
	if err := os.WriteFile(s.configPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return s, dkimKeygen(t, s, "dc.test", "s1", "both")
}

// dcPublishAll publishes everything right for dc.test.
func dcPublishAll(t *testing.T, srv *dnstest.Server, keys []dkimRecord) {
	t.Helper()
	srv.Add(t,
		`dc.test. 300 IN TXT "v=spf1 ip4:127.0.0.1 ip6:::1 -all"`,
		`_dmarc.dc.test. 300 IN TXT "v=DMARC1; p=reject"`,
		`1.0.0.127.in-addr.arpa. 300 IN PTR mail.dc.test.`,
		dcV6PTR+` 300 IN PTR mail.dc.test.`,
		`mail.dc.test. 300 IN A 127.0.0.1`,
		`mail.dc.test. 300 IN AAAA ::1`,
	)
	for _, k := range keys {
		srv.Add(t, k.name+`. 300 IN TXT "`+k.value+`"`)
	}
}

// dcCheck runs "sluice dns check dc.test".
func dcCheck(t *testing.T, s *sluiceServer) result {
	t.Helper()
	return s.cli("dns", "check", "dc.test")
}

// dcHas reports whether a finding line with this status and check says
// mention.
func dcHas(out, status, check, mention string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == status && f[1] == check && strings.Contains(line, mention) {
			return true
		}
	}
	return false
}

// TestDNSCheckExitStatus: everything published right (IPv4 and IPv6
// egress) exits 0 with an ok line per check; each thing that would make
// receivers reject exits 1 and names it with its fix; a mere warning
// (no DMARC record) still exits 0.
func TestDNSCheckExitStatus(t *testing.T) {
	t.Parallel()
	t.Run("all-published", func(t *testing.T) {
		t.Parallel()
		srv := dnstest.Start(t, "127.0.0.1:0")
		s, keys := dcSetup(t, srv.Addr)
		dcPublishAll(t, srv, keys)
		r := dcCheck(t, s)
		if r.exit != 0 || strings.Contains(r.stdout, "FAIL") {
			t.Fatalf("every record right, want exit 0 and no FAIL:\n%s", r)
		}
		for _, want := range []struct{ check, mention string }{
			{"spf", "authorizes 127.0.0.1"}, {"spf", "authorizes ::1"},
			{"dkim", "s1-rsa._domainkey.dc.test"}, {"dkim", "s1-ed25519._domainkey.dc.test"},
			{"dmarc", "p=reject"},
			{"ptr", "127.0.0.1 has forward-confirmed PTR mail.dc.test"}, {"ptr", "::1 has forward-confirmed PTR mail.dc.test"},
		} {
			if !dcHas(r.stdout, "ok", want.check, want.mention) {
				t.Errorf("no ok %s line saying %q:\n%s", want.check, want.mention, r.stdout)
			}
		}
	})
	cases := []struct {
		name    string
		mutate  func(t *testing.T, srv *dnstest.Server, keys []dkimRecord)
		exit    int
		status  string
		check   string
		mention string
		fix     string // in the "fix:" line
	}{
		{"no-SPF", func(t *testing.T, srv *dnstest.Server, _ []dkimRecord) { srv.Remove("dc.test", dns.TypeTXT) },
			1, "FAIL", "spf", "no SPF record", "ip6:::1"},
		{"SPF-without-IPv6", func(t *testing.T, srv *dnstest.Server, _ []dkimRecord) {
			srv.Remove("dc.test", dns.TypeTXT)
			srv.Add(t, `dc.test. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"`)
		}, 1, "FAIL", "spf", "does not authorize ::1", "add ip6:::1"},
		{"DKIM-key-not-published", func(t *testing.T, srv *dnstest.Server, keys []dkimRecord) { srv.Remove(keys[0].name, 0) },
			1, "FAIL", "dkim", dcRSAKeyName + " (rsa, active) is not published", "sluice dkim record dc.test"},
		{"no-ip6.arpa-PTR", func(t *testing.T, srv *dnstest.Server, _ []dkimRecord) { srv.Remove(dcV6PTR, 0) },
			1, "FAIL", "ptr", "::1 has no PTR record", "reverse DNS"},
		{"IPv6-PTR-not-forward-confirmed", func(t *testing.T, srv *dnstest.Server, _ []dkimRecord) {
			srv.Remove("mail.dc.test", dns.TypeAAAA)
		}, 1, "FAIL", "ptr", "does not resolve back to ::1", "AAAA record"},
		{"no-DMARC-is-a-warning", func(t *testing.T, srv *dnstest.Server, _ []dkimRecord) { srv.Remove("_dmarc.dc.test", 0) },
			0, "warn", "dmarc", "no DMARC record", "v=DMARC1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := dnstest.Start(t, "127.0.0.1:0")
			s, keys := dcSetup(t, srv.Addr)
			dcPublishAll(t, srv, keys)
			tc.mutate(t, srv, keys)
			r := dcCheck(t, s)
			if r.exit != tc.exit {
				t.Errorf("exit status %d, want %d", r.exit, tc.exit)
			}
			if !dcHas(r.stdout, tc.status, tc.check, tc.mention) {
				t.Errorf("no %s %s line saying %q", tc.status, tc.check, tc.mention)
			}
			if !strings.Contains(r.stdout, "fix: ") || !strings.Contains(r.stdout, tc.fix) {
				t.Errorf("no fix line with %q", tc.fix)
			}
			if tc.exit == 1 && !strings.Contains(r.stderr, "would make receivers reject") {
				t.Errorf("stderr does not say why the status is 1")
			}
			if t.Failed() {
				t.Logf("sluice dns check dc.test:\n%s", r)
			}
		})
	}
}

// dcRSAKeyName is the name of the first record dkim keygen --algo both
// prints (the RSA one).
const dcRSAKeyName = "s1-rsa._domainkey.dc.test"

// TestDNSCheckResolverDown: with no resolver answering, every check says
// it could not check and asks to retry; none claims a record is missing,
// and the exit status is 3 (could not check), not the "receivers would
// reject" 1.
func TestDNSCheckResolverDown(t *testing.T) {
	t.Parallel()
	s, _ := dcSetup(t, "127.0.0.1:9") // nothing listens on the discard port
	r := dcCheck(t, s)
	for _, check := range []string{"spf", "dkim", "dmarc", "ptr"} {
		if !dcHas(r.stdout, "ERR", check, "could not check") {
			t.Errorf("no ERR %s line saying \"could not check\"", check)
		}
	}
	for _, claim := range []string{"no SPF record", "is not published", "no DMARC record", "no PTR record", "FAIL"} {
		if strings.Contains(r.stdout, claim) {
			t.Errorf("a resolver that does not answer is reported as %q", claim)
		}
	}
	if !strings.Contains(r.stdout, "retry") {
		t.Errorf("the findings do not say to retry")
	}
	if r.exit != 3 {
		t.Errorf("exit status %d for a resolver failure, want 3 (could not check; retry)", r.exit)
	}
	if t.Failed() {
		t.Logf("sluice dns check dc.test:\n%s", r)
	}
}
