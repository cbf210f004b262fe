package relay_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"sluice/relay"
)

// policyServer serves MTA-STS policies over HTTPS on loopback with a
// certificate for mta-sts.DOMAIN signed by the test CA, as a real policy
// host would (the relay reaches it through MTASTS.PolicyAddr).
type policyServer struct {
	addr string

	mu       sync.Mutex
	policies map[string]string // domain -> policy text
	hits     map[string]int
}

func startPolicyServer(t *testing.T, ca *testCA, policies map[string]string) *policyServer {
	t.Helper()
	ps := &policyServer{policies: policies, hits: map[string]int{}}
	var names []string
	for d := range policies {
		names = append(names, "mta-sts."+d)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		domain := strings.TrimPrefix(host, "mta-sts.")
		ps.mu.Lock()
		policy, ok := ps.policies[domain]
		ps.hits[domain]++
		ps.mu.Unlock()
		if r.URL.Path != "/.well-known/mta-sts.txt" || !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, policy)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, names...)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ps.addr = srv.Listener.Addr().String()
	return ps
}

func (ps *policyServer) fetches(domain string) int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.hits[domain]
}

func stsPolicy(mode string, mx ...string) string {
	s := "version: STSv1\r\nmode: " + mode + "\r\n"
	for _, m := range mx {
		s += "mx: " + m + "\r\n"
	}
	return s + "max_age: 86400\r\n"
}

// publishSTS adds the _mta-sts TXT record that announces a policy.
func (h *harness) publishSTS(domain string) {
	h.t.Helper()
	h.dns.Add(h.t, fmt.Sprintf(`_mta-sts.%s. 300 IN TXT "v=STSv1; id=20250101T000000"`, domain))
}

// brokenTLS is a STARTTLS offer whose handshake always fails (the server
// speaks only TLS 1.1; Sluice requires 1.2).
func brokenTLS(t testing.TB, host string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{selfSigned(t, host)}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
}

// Under an enforced MTA-STS policy, an MX whose certificate does not
// verify never gets the message: it stays queued and deferred, and the
// server never sees a MAIL command, in TLS or in clear.
func TestMTASTSEnforceRefusesInvalidCertificate(t *testing.T) {
	h := newHarness(t)
	ca := newTestCA(t)
	ps := startPolicyServer(t, ca, map[string]string{"enforce.test": stsPolicy("enforce", "mx.enforce.test")})
	h.receivers(rx("mx.enforce.test", "127.0.0.2", withTLS(selfSigned(t, "mx.enforce.test"))))
	h.mx("enforce.test", 10, "mx.enforce.test")
	h.publishSTS("enforce.test")
	h.sts = relay.NewMTASTS(h.res, ca.pool, ps.addr)
	mx := h.rx["mx.enforce.test"]
	h.start(nil)

	const rcpt = "bob@enforce.test"
	id := h.send("alice@sender.test", []string{rcpt}, "secret plans")
	eventually(t, "three deferred attempts", func() bool { return len(h.results.of(id, rcpt)) >= 3 })

	for _, o := range h.results.of(id, rcpt) {
		if o != "deferred" {
			t.Errorf("outcomes %v, want only deferred", h.results.of(id, rcpt))
			break
		}
	}
	accepts, mails, plain := mx.counts()
	if accepts == 0 {
		t.Errorf("the MX was never contacted: the test proves nothing")
	}
	if mails != 0 || plain != 0 || len(mx.transactions()) != 0 {
		t.Errorf("the MX saw %d MAIL commands (%d in clear) despite the enforced policy", mails, plain)
	}
	if !slices.Contains(h.queued(), id) {
		t.Fatalf("message %s left the queue; it must stay deferred", id)
	}
	st := h.state(id)
	rs := st.Rcpt(rcpt)
	if rs == nil || rs.Status != "pending" || st.Attempts < 3 {
		t.Fatalf("state %+v, want pending after 3 attempts", st)
	}
	if r := strings.ToLower(rs.LastReply); !strings.Contains(r, "tls") || !strings.Contains(r, "certificate") {
		t.Errorf("last reply %q does not say the TLS certificate failed", rs.LastReply)
	}
	if ps.fetches("enforce.test") == 0 {
		t.Errorf("the policy was never fetched")
	}
	if recs := h.logs.find("dsn queued", nil); len(recs) != 0 {
		t.Errorf("a deferral under MTA-STS queued a DSN: %v", recs)
	}
}

// The same policy with an MX whose certificate verifies (signed by the
// trusted CA for its name) gets the message over TLS.
func TestMTASTSEnforceDeliversWithValidCertificate(t *testing.T) {
	h := newHarness(t)
	ca := newTestCA(t)
	ps := startPolicyServer(t, ca, map[string]string{"enforce.test": stsPolicy("enforce", "*.enforce.test")})
	h.receivers(rx("mx1.enforce.test", "127.0.0.2", withTLS(ca.leaf(t, "mx1.enforce.test"))))
	h.mx("enforce.test", 10, "mx1.enforce.test")
	h.publishSTS("enforce.test")
	h.sts = relay.NewMTASTS(h.res, ca.pool, ps.addr)
	h.start(nil)

	h.send("alice@sender.test", []string{"bob@enforce.test"}, "valid cert")
	h.waitEmpty()
	got := h.rx["mx1.enforce.test"].delivered()
	if len(got) != 1 || !got[0].TLS {
		t.Fatalf("MX got %+v, want one message over TLS", summary(got))
	}
	if ps.fetches("enforce.test") == 0 {
		t.Errorf("the policy was never fetched")
	}
}

// With a policy in testing mode, or no policy at all, TLS is
// opportunistic: the same self-signed MX gets the message over TLS, and an
// MX whose TLS is broken gets it in clear rather than not at all.
func TestMTASTSTestingAndNoPolicyAreOpportunistic(t *testing.T) {
	h := newHarness(t)
	ca := newTestCA(t)
	ps := startPolicyServer(t, ca, map[string]string{"testing.test": stsPolicy("testing", "mx.sts.test")})
	h.receivers(
		rx("mx.sts.test", "127.0.0.2", withTLS(selfSigned(t, "mx.sts.test"))),
		rx("mx.broken.test", "127.0.0.4", withTLSConfig(brokenTLS(t, "mx.broken.test"))))
	h.mx("testing.test", 10, "mx.sts.test")
	h.mx("nopolicy.test", 10, "mx.sts.test")
	h.mx("broken.test", 10, "mx.broken.test")
	h.publishSTS("testing.test")
	h.sts = relay.NewMTASTS(h.res, ca.pool, ps.addr)
	h.start(nil)

	h.send("alice@sender.test", []string{"t@testing.test"}, "testing mode")
	h.send("alice@sender.test", []string{"n@nopolicy.test"}, "no policy")
	h.send("alice@sender.test", []string{"b@broken.test"}, "broken tls")
	h.waitEmpty()

	mx := h.rx["mx.sts.test"]
	for _, rc := range []string{"t@testing.test", "n@nopolicy.test"} {
		got := mx.deliveredTo(rc)
		if len(got) != 1 || !got[0].TLS {
			t.Errorf("%s: MX got %+v, want one message over (unverified) TLS", rc, summary(got))
		}
	}
	if got := h.rx["mx.broken.test"].deliveredTo("b@broken.test"); len(got) != 1 || got[0].TLS {
		t.Errorf("broken TLS: MX got %+v, want one message in clear after the failed handshake", summary(got))
	}
	if ps.fetches("testing.test") == 0 {
		t.Errorf("the testing policy was never fetched")
	}
}

// RFC 8461 5: in testing mode mail is delivered "as though there were no
// MTA-STS validation failure", so a failed handshake falls back to clear
// text exactly as without a policy.
func TestMTASTSTestingModeFallsBackLikeNoPolicy(t *testing.T) {
	h := newHarness(t)
	ca := newTestCA(t)
	ps := startPolicyServer(t, ca, map[string]string{"testing.test": stsPolicy("testing", "mx.broken.test")})
	h.receivers(rx("mx.broken.test", "127.0.0.4", withTLSConfig(brokenTLS(t, "mx.broken.test"))))
	h.mx("testing.test", 10, "mx.broken.test")
	h.publishSTS("testing.test")
	h.sts = relay.NewMTASTS(h.res, ca.pool, ps.addr)
	h.start(nil)

	id := h.send("alice@sender.test", []string{"t@testing.test"}, "testing mode, broken tls")
	eventually(t, "delivery or three deferrals", func() bool {
		o := h.results.of(id, "t@testing.test")
		return slices.Contains(o, "delivered") || len(o) >= 3
	})
	if o := h.results.of(id, "t@testing.test"); !slices.Equal(o, []string{"delivered"}) {
		t.Errorf("outcomes %v, want [delivered] at the first attempt (as with no policy); last reply: %s",
			o, h.state(id).Rcpts[0].LastReply)
	}
}

// A connection opened for a domain without a policy (in clear text after
// a failed handshake, or over TLS with a certificate nobody verified) must
// not be reused for a domain whose enforced policy names the same MX host:
// the pool would bypass MTA-STS.
func TestMTASTSEnforceNotBypassedByPooledConnection(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tls     func(t *testing.T) receiverOpt
		wantTLS bool // how the no-policy message travels
	}{
		{"clear text", func(t *testing.T) receiverOpt { return withTLSConfig(brokenTLS(t, "mx.shared.test")) }, false},
		{"unverified TLS", func(t *testing.T) receiverOpt { return withTLS(selfSigned(t, "mx.shared.test")) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ca := newTestCA(t)
			ps := startPolicyServer(t, ca, map[string]string{"enforce.test": stsPolicy("enforce", "mx.shared.test")})
			h.receivers(rx("mx.shared.test", "127.0.0.2", tc.tls(t)))
			h.mx("plain.test", 10, "mx.shared.test")
			h.mx("enforce.test", 10, "mx.shared.test")
			h.publishSTS("enforce.test")
			h.sts = relay.NewMTASTS(h.res, ca.pool, ps.addr)
			mx := h.rx["mx.shared.test"]
			h.start(nil)

			h.send("alice@sender.test", []string{"p@plain.test"}, "no policy first")
			h.waitEmpty()
			if got := mx.deliveredTo("p@plain.test"); len(got) != 1 || got[0].TLS != tc.wantTLS {
				t.Fatalf("setup: want the no-policy message delivered (TLS=%v), got %+v", tc.wantTLS, summary(got))
			}

			id := h.send("alice@sender.test", []string{"e@enforce.test"}, "enforced second")
			eventually(t, "delivery or two deferrals", func() bool {
				o := h.results.of(id, "e@enforce.test")
				return slices.Contains(o, "delivered") || len(o) >= 2
			})
			for _, x := range mx.transactions() {
				if slices.Contains(x.Tried, "e@enforce.test") {
					t.Errorf("the enforce-policy recipient reached the MX (TLS=%v, delivered=%v): MTA-STS bypassed by a pooled connection", x.TLS, x.Accepted)
				}
			}
			if ps.fetches("enforce.test") == 0 {
				t.Errorf("the policy was never fetched")
			}
		})
	}
}

// A connection whose certificate verified for the MX name (checked even
// though no policy required it) does satisfy an enforced policy naming
// that MX, so both messages share it.
func TestMTASTSVerifiedConnectionIsReusedForEnforce(t *testing.T) {
	h := newHarness(t)
	ca := newTestCA(t)
	ps := startPolicyServer(t, ca, map[string]string{"enforce.test": stsPolicy("enforce", "mx.shared.test")})
	h.receivers(rx("mx.shared.test", "127.0.0.2", withTLS(ca.leaf(t, "mx.shared.test"))))
	h.mx("plain.test", 10, "mx.shared.test")
	h.mx("enforce.test", 10, "mx.shared.test")
	h.publishSTS("enforce.test")
	h.sts = relay.NewMTASTS(h.res, ca.pool, ps.addr)
	mx := h.rx["mx.shared.test"]
	h.start(nil)

	h.send("alice@sender.test", []string{"p@plain.test"}, "no policy first")
	h.waitEmpty()
	h.send("alice@sender.test", []string{"e@enforce.test"}, "enforced second")
	h.waitEmpty()
	for _, rc := range []string{"p@plain.test", "e@enforce.test"} {
		if got := mx.deliveredTo(rc); len(got) != 1 || !got[0].TLS {
			t.Errorf("%s: MX got %+v, want one message over TLS", rc, summary(got))
		}
	}
	if accepts, _, _ := mx.counts(); accepts != 1 {
		t.Errorf("%d connections, want 1: the verified session should carry both", accepts)
	}
	_ = ps
}

// Testing mode reports what an enforced policy would have refused (an MX
// the policy does not list, a certificate that does not verify) in the
// log, and delivers anyway.
func TestMTASTSTestingModeReportsFailures(t *testing.T) {
	h := newHarness(t)
	ca := newTestCA(t)
	ps := startPolicyServer(t, ca, map[string]string{"testing.test": stsPolicy("testing", "mx.listed.test")})
	h.receivers(rx("mx.unlisted.test", "127.0.0.2", withTLS(selfSigned(t, "mx.unlisted.test"))))
	h.mx("testing.test", 10, "mx.unlisted.test")
	h.publishSTS("testing.test")
	h.sts = relay.NewMTASTS(h.res, ca.pool, ps.addr)
	h.start(nil)

	h.send("alice@sender.test", []string{"t@testing.test"}, "testing mode report")
	h.waitEmpty()
	if got := h.rx["mx.unlisted.test"].deliveredTo("t@testing.test"); len(got) != 1 || !got[0].TLS {
		t.Errorf("MX got %+v, want the message over (unverified) TLS", summary(got))
	}
	if recs := h.logs.find("mta-sts testing: MX not in the policy; an enforced policy would skip it", map[string]string{"domain": "testing.test", "mx": "mx.unlisted.test"}); len(recs) == 0 {
		t.Errorf("no log line reports the MX missing from the testing policy")
	}
	if recs := h.logs.find("mta-sts testing: certificate not valid for the MX; an enforced policy would defer this mail", map[string]string{"mx": "mx.unlisted.test"}); len(recs) == 0 {
		t.Errorf("no log line reports the certificate failure under the testing policy")
	}
	_ = ps
}

// A domain without MX records is delivered to its address records (the
// implicit MX, RFC 5321 5.1); an enforced policy applies to that host too:
// not listed, nothing is sent; listed with a valid certificate, delivered.
func TestMTASTSEnforceAppliesToImplicitMX(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listed string
		want   string
	}{
		{"not listed", "mx.elsewhere.test", "deferred"},
		{"listed", "aonly.test", "delivered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ca := newTestCA(t)
			ps := startPolicyServer(t, ca, map[string]string{"aonly.test": stsPolicy("enforce", tc.listed)})
			h.receivers(rx("aonly.test", "127.0.0.6", withTLS(ca.leaf(t, "aonly.test"))))
			h.publishSTS("aonly.test")
			h.sts = relay.NewMTASTS(h.res, ca.pool, ps.addr)
			h.start(nil)

			id := h.send("alice@sender.test", []string{"a@aonly.test"}, "implicit mx")
			eventually(t, "an outcome", func() bool { return len(h.results.of(id, "a@aonly.test")) > 0 })
			if o := h.results.of(id, "a@aonly.test"); o[0] != tc.want {
				t.Errorf("outcomes %v, want %s first", o, tc.want)
			}
			_, mails, _ := h.rx["aonly.test"].counts()
			if tc.want == "deferred" && mails != 0 {
				t.Errorf("the host not listed in the enforced policy saw %d MAIL commands", mails)
			}
			if tc.want == "delivered" {
				if got := h.rx["aonly.test"].delivered(); len(got) != 1 || !got[0].TLS {
					t.Errorf("host got %+v, want one message over TLS", summary(got))
				}
			}
		})
	}
}
