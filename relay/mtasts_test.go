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

// serveSTS publishes MTA-STS policies (domain -> policy text) as a domain
// does: the _mta-sts TXT record that announces each one, and the policy
// host serving it over HTTPS with a certificate from ca. The relay that
// h.start runs fetches them, trusting ca.
func (h *harness) serveSTS(ca *testCA, policies map[string]string) *policyServer {
	h.t.Helper()
	ps := startPolicyServer(h.t, ca, policies)
	for domain := range policies {
		h.dns.Add(h.t, fmt.Sprintf(`_mta-sts.%s. 300 IN TXT "v=STSv1; id=20250101T000000"`, domain))
	}
	h.sts = relay.NewMTASTS(h.res, ca.pool, ps.addr)
	return ps
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
	ps := h.serveSTS(ca, map[string]string{"enforce.test": stsPolicy("enforce", "mx.enforce.test")})
	h.receivers(rx("mx.enforce.test", "127.0.0.2", withTLS(selfSigned(t, "mx.enforce.test"))))
	h.mx("enforce.test", 10, "mx.enforce.test")
	mx := h.rx["mx.enforce.test"]
	h.start(nil)

	const rcpt = "bob@enforce.test"
	id := h.send("alice@sender.test", []string{rcpt}, "secret plans")
	// The fourth outcome comes after the third attempt saved its state.
	eventually(t, "three deferred attempts", func() bool { return len(h.results.of(id, rcpt)) >= 4 })

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
	ps := h.serveSTS(ca, map[string]string{"enforce.test": stsPolicy("enforce", "*.enforce.test")})
	h.receivers(rx("mx1.enforce.test", "127.0.0.2", withTLS(ca.leaf(t, "mx1.enforce.test"))))
	h.mx("enforce.test", 10, "mx1.enforce.test")
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
// opportunistic: a self-signed MX gets the message over (unverified) TLS,
// and an MX whose TLS is broken gets it in clear rather than not at all,
// at the first attempt. RFC 8461 5: in testing mode mail is delivered "as
// though there were no MTA-STS validation failure", so a failed handshake
// falls back to clear text exactly as without a policy.
func TestMTASTSTestingAndNoPolicyAreOpportunistic(t *testing.T) {
	h := newHarness(t)
	ca := newTestCA(t)
	ps := h.serveSTS(ca, map[string]string{
		"testing.test":    stsPolicy("testing", "mx.sts.test"),
		"testbroken.test": stsPolicy("testing", "mx.testbroken.test"),
	})
	// The two broken MX hosts are distinct, so that the testing-mode
	// message makes its own handshake instead of reusing the clear-text
	// session of the other.
	h.receivers(
		rx("mx.sts.test", "127.0.0.2", withTLS(selfSigned(t, "mx.sts.test"))),
		rx("mx.broken.test", "127.0.0.4", withTLSConfig(brokenTLS(t, "mx.broken.test"))),
		rx("mx.testbroken.test", "127.0.0.5", withTLSConfig(brokenTLS(t, "mx.testbroken.test"))))
	cases := []struct {
		domain, mx string
		policy     bool // testing mode; else none
		wantTLS    bool
	}{
		{"testing.test", "mx.sts.test", true, true},
		{"nopolicy.test", "mx.sts.test", false, true},
		{"broken.test", "mx.broken.test", false, false},
		{"testbroken.test", "mx.testbroken.test", true, false},
	}
	ids := map[string]string{} // recipient -> queue id
	for _, c := range cases {
		h.mx(c.domain, 10, c.mx)
	}
	h.start(nil)
	for _, c := range cases {
		ids["x@"+c.domain] = h.send("alice@sender.test", []string{"x@" + c.domain}, "opportunistic to "+c.domain)
	}
	eventually(t, "each message delivered or deferred three times", func() bool {
		for rc, id := range ids {
			if o := h.results.of(id, rc); !slices.Contains(o, "delivered") && len(o) < 3 {
				return false
			}
		}
		return true
	})
	for _, c := range cases {
		t.Run(c.domain, func(t *testing.T) {
			rcpt := "x@" + c.domain
			id := ids[rcpt]
			if o := h.results.of(id, rcpt); !slices.Equal(o, []string{"delivered"}) {
				t.Fatalf("outcomes %v, want [delivered] at the first attempt (as with no policy); last reply: %s",
					o, h.state(id).Rcpts[0].LastReply)
			}
			if got := h.rx[c.mx].deliveredTo(rcpt); len(got) != 1 || got[0].TLS != c.wantTLS {
				t.Errorf("%s got %+v, want one message, over TLS: %v (in clear after a failed handshake)", c.mx, summary(got), c.wantTLS)
			}
			if c.policy && ps.fetches(c.domain) == 0 {
				t.Errorf("the testing policy of %s was never fetched", c.domain)
			}
		})
	}
	if recs := h.logs.find("mta-sts testing: TLS failed, delivering in clear; an enforced policy would defer this mail",
		map[string]string{"mx": "mx.testbroken.test"}); len(recs) == 0 {
		t.Errorf("no log line reports the clear-text fallback under the testing policy")
	}
	h.waitEmpty()
}

// A domain whose policy cannot be had (its host answers with something
// that is not a policy) is delivered as without a policy (RFC 8461 5), and
// the failed fetch is remembered: the next messages do not each pay for
// another HTTPS request.
func TestMTASTSFailedFetchNotRepeatedPerMessage(t *testing.T) {
	h := newHarness(t)
	ca := newTestCA(t)
	ps := h.serveSTS(ca, map[string]string{"badpolicy.test": "version: STSv1\r\nmode: strict\r\n"})
	h.receivers(rx("mx.badpolicy.test", "127.0.0.2", withTLS(selfSigned(t, "mx.badpolicy.test"))))
	h.mx("badpolicy.test", 10, "mx.badpolicy.test")
	h.start(nil)

	for i := 0; i < 3; i++ {
		rcpt := fmt.Sprintf("r%d@badpolicy.test", i)
		id := h.send("alice@sender.test", []string{rcpt}, "bad policy")
		h.waitEmpty()
		if o := h.results.of(id, rcpt); !slices.Equal(o, []string{"delivered"}) {
			t.Errorf("message %d: outcomes %v, want [delivered] (no usable policy: as without one)", i, o)
		}
	}
	if n := ps.fetches("badpolicy.test"); n != 1 {
		t.Errorf("the policy host was asked %d times for 3 messages, want once", n)
	}
	if recs := h.logs.find("mta-sts: policy not available", map[string]string{"domain": "badpolicy.test"}); len(recs) != 3 {
		t.Errorf("%d log lines say the policy is not available, want one per message (3)", len(recs))
	}
}

// sharedMX runs a relay with one MX host, mx.shared.test (with opt), for
// plain.test (no policy) and enforce.test (an enforced policy, from ca,
// naming that host), and delivers a first message to p@plain.test, which
// leaves its connection in the pool.
func sharedMX(t *testing.T, ca *testCA, opt receiverOpt) (*harness, *receiver, *policyServer) {
	t.Helper()
	h := newHarness(t)
	ps := h.serveSTS(ca, map[string]string{"enforce.test": stsPolicy("enforce", "mx.shared.test")})
	h.receivers(rx("mx.shared.test", "127.0.0.2", opt))
	h.mx("plain.test", 10, "mx.shared.test")
	h.mx("enforce.test", 10, "mx.shared.test")
	h.start(nil)
	h.send("alice@sender.test", []string{"p@plain.test"}, "no policy first")
	h.waitEmpty()
	return h, h.rx["mx.shared.test"], ps
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
			h, mx, ps := sharedMX(t, newTestCA(t), tc.tls(t))
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
	ca := newTestCA(t)
	h, mx, _ := sharedMX(t, ca, withTLS(ca.leaf(t, "mx.shared.test")))
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
}

// Testing mode reports what an enforced policy would have refused (an MX
// the policy does not list, a certificate that does not verify) in the
// log, and delivers anyway.
func TestMTASTSTestingModeReportsFailures(t *testing.T) {
	h := newHarness(t)
	ca := newTestCA(t)
	h.serveSTS(ca, map[string]string{"testing.test": stsPolicy("testing", "mx.listed.test")})
	h.receivers(rx("mx.unlisted.test", "127.0.0.2", withTLS(selfSigned(t, "mx.unlisted.test"))))
	h.mx("testing.test", 10, "mx.unlisted.test")
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
			ps := h.serveSTS(ca, map[string]string{"aonly.test": stsPolicy("enforce", tc.listed)})
			h.receivers(rx("aonly.test", "127.0.0.6", withTLS(ca.leaf(t, "aonly.test"))))
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
			if ps.fetches("aonly.test") == 0 {
				t.Errorf("the policy was never fetched")
			}
		})
	}
}
