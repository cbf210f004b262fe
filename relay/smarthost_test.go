package relay_test

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"sluice/relay"
)

// allowInsecureAuth makes a server offer AUTH without TLS.
func allowInsecureAuth(s *smtp.Server) { s.AllowInsecureAuth = true }

func smarthostConfig(h *harness, user, pass string) func(*relay.Config) {
	return func(c *relay.Config) {
		c.Mode = "smarthost"
		c.Smarthost = fmt.Sprintf("smarthost.test:%d", h.port)
		c.SmarthostUsername, c.SmarthostPassword = user, pass
		c.SmarthostTLS = "starttls"
		c.SmarthostInsecure = true
	}
}

// In smarthost mode every message, whatever its recipients' domains, goes
// to the smarthost over STARTTLS, logged in with AUTH PLAIN as the
// configured user; recipient domains are never looked up.
func TestSmarthostWithAuth(t *testing.T) {
	h := newHarness(t)
	h.receivers(rx("smarthost.test", "127.0.0.7", withTLS(selfSigned(t, "smarthost.test")), withAuth("relay-user", "s3cret-pw")))
	sh := h.rx["smarthost.test"]
	h.start(smarthostConfig(h, "relay-user", "s3cret-pw"))

	// remote.test and far.test have no DNS records at all.
	id := h.send("alice@sender.test", []string{"bob@remote.test", "carol@far.test"}, "via smarthost")
	h.waitEmpty()

	got := sh.delivered()
	var rcpts []string
	for _, x := range got {
		if !x.TLS || x.AuthUser != "relay-user" || x.From != "alice@sender.test" || subjectOf(t, x.Data) != "via smarthost" {
			t.Errorf("smarthost transaction %+v: want TLS, AUTH relay-user, from alice@sender.test", summary([]txn{x}))
		}
		rcpts = append(rcpts, x.Rcpts...)
	}
	slices.Sort(rcpts)
	if !slices.Equal(rcpts, []string{"bob@remote.test", "carol@far.test"}) {
		t.Errorf("smarthost got recipients %v", rcpts)
	}
	if _, _, plain := sh.counts(); plain != 0 {
		t.Errorf("%d MAIL commands in clear", plain)
	}
	for _, rc := range []string{"bob@remote.test", "carol@far.test"} {
		if o := h.results.of(id, rc); !slices.Equal(o, []string{"delivered"}) {
			t.Errorf("%s: outcomes %v", rc, o)
		}
	}
}

// A wrong smarthost password is a configuration problem, not the
// recipient's: the message is deferred and stays queued, no DSN.
func TestSmarthostWrongPasswordDefers(t *testing.T) {
	h := newHarness(t)
	h.receivers(rx("smarthost.test", "127.0.0.7", withTLS(selfSigned(t, "smarthost.test")), withAuth("relay-user", "s3cret-pw")))
	sh := h.rx["smarthost.test"]
	h.start(smarthostConfig(h, "relay-user", "not-the-password"))

	const rcpt = "bob@remote.test"
	id := h.send("alice@sender.test", []string{rcpt}, "wrong password")
	eventually(t, "two deferred attempts", func() bool { return len(h.results.of(id, rcpt)) >= 2 })

	if o := h.results.of(id, rcpt); slices.ContainsFunc(o, func(s string) bool { return s != "deferred" }) {
		t.Errorf("outcomes %v, want only deferred", o)
	}
	if len(sh.delivered()) != 0 || len(sh.transactions()) != 0 {
		t.Errorf("the smarthost accepted a transaction without a login")
	}
	sh.mu.Lock()
	fails, auths := sh.authFails, len(sh.auths)
	sh.mu.Unlock()
	if fails == 0 || auths != 0 {
		t.Errorf("smarthost saw %d failed and %d good logins, want failures only", fails, auths)
	}
	if !slices.Contains(h.queued(), id) {
		t.Fatalf("message left the queue")
	}
	rs := h.state(id).Rcpt(rcpt)
	if rs.Status != "pending" || !strings.Contains(rs.LastReply, "535") {
		t.Errorf("state %+v: want pending with the 535 reply", rs)
	}
	if recs := h.logs.find("dsn queued", nil); len(recs) != 0 {
		t.Errorf("a login failure queued a DSN: %v", recs)
	}
}

// A smarthost that does not offer STARTTLS never gets the password or the
// message in clear.
func TestSmarthostWithoutSTARTTLSRefused(t *testing.T) {
	h := newHarness(t)
	h.receivers(rx("smarthost.test", "127.0.0.7", withAuth("relay-user", "s3cret-pw"), withServer(allowInsecureAuth)))
	sh := h.rx["smarthost.test"]
	h.start(smarthostConfig(h, "relay-user", "s3cret-pw"))

	id := h.send("alice@sender.test", []string{"bob@remote.test"}, "no tls")
	eventually(t, "two deferred attempts", func() bool { return len(h.results.of(id, "bob@remote.test")) >= 2 })
	sh.mu.Lock()
	auths, fails := len(sh.auths), sh.authFails
	sh.mu.Unlock()
	if accepts, mails, _ := sh.counts(); accepts == 0 || mails != 0 || auths+fails != 0 {
		t.Errorf("connections=%d MAIL=%d AUTH=%d on a smarthost without TLS, want connections but no AUTH or MAIL", accepts, mails, auths+fails)
	}
}

// implicitTLSReceiver starts a receiver that speaks TLS from the first
// byte (a smarthost on port 465) and publishes its A record.
func (h *harness) implicitTLSReceiver(name, ip string, cert tls.Certificate, opts ...receiverOpt) *receiver {
	h.t.Helper()
	port, ls := listenShared(h.t, []string{ip})
	h.port = port
	l := tls.NewListener(ls[0], &tls.Config{Certificates: []tls.Certificate{cert}})
	r := serveReceiver(h.t, name, l, opts...)
	h.rx[name] = r
	h.dns.Add(h.t, fmt.Sprintf("%s. 300 IN A %s", name, ip))
	return r
}

// Both ways into a smarthost (implicit TLS on a 465-style port, STARTTLS)
// and both login mechanisms (PLAIN, and LOGIN for servers that offer only
// it) deliver the message over TLS as the configured user.
func TestSmarthostTLSModesAndMechanisms(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tlsMode   string
		loginOnly bool
	}{
		{"starttls plain", "starttls", false},
		{"implicit plain", "implicit", false},
		{"starttls login", "starttls", true},
		{"implicit login", "implicit", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			auth := withAuth("relay-user", "s3cret-pw")
			if tc.loginOnly {
				auth = withAuthLogin("relay-user", "s3cret-pw")
			}
			cert := selfSigned(t, "smarthost.test")
			var sh *receiver
			if tc.tlsMode == "implicit" {
				sh = h.implicitTLSReceiver("smarthost.test", "127.0.0.7", cert, auth)
			} else {
				h.receivers(rx("smarthost.test", "127.0.0.7", withTLS(cert), auth))
				sh = h.rx["smarthost.test"]
			}
			cfg := smarthostConfig(h, "relay-user", "s3cret-pw")
			h.start(func(c *relay.Config) { cfg(c); c.SmarthostTLS = tc.tlsMode })

			id := h.send("alice@sender.test", []string{"bob@remote.test"}, "smarthost "+tc.name)
			h.waitEmpty()
			got := sh.delivered()
			if len(got) != 1 || !got[0].TLS || got[0].AuthUser != "relay-user" || subjectOf(t, got[0].Data) != "smarthost "+tc.name {
				t.Errorf("smarthost got %+v, want one message over TLS logged in as relay-user", summary(got))
			}
			if o := h.results.of(id, "bob@remote.test"); !slices.Equal(o, []string{"delivered"}) {
				t.Errorf("outcomes %v, want [delivered]", o)
			}
			sh.mu.Lock()
			defer sh.mu.Unlock()
			if sh.authFails != 0 || len(sh.auths) != 1 {
				t.Errorf("smarthost saw %d good and %d failed logins, want one good", len(sh.auths), sh.authFails)
			}
		})
	}
}

// An implicit-TLS smarthost whose certificate does not verify (when
// verification is on, the default) never gets the login or the message.
func TestSmarthostImplicitTLSVerifiesCertificate(t *testing.T) {
	h := newHarness(t)
	sh := h.implicitTLSReceiver("smarthost.test", "127.0.0.7", selfSigned(t, "smarthost.test"), withAuth("relay-user", "s3cret-pw"))
	cfg := smarthostConfig(h, "relay-user", "s3cret-pw")
	h.start(func(c *relay.Config) { cfg(c); c.SmarthostTLS = "implicit"; c.SmarthostInsecure = false })

	id := h.send("alice@sender.test", []string{"bob@remote.test"}, "unverified smarthost")
	eventually(t, "two deferred attempts", func() bool { return len(h.results.of(id, "bob@remote.test")) >= 2 })
	sh.mu.Lock()
	auths, fails := len(sh.auths), sh.authFails
	sh.mu.Unlock()
	if _, mails, _ := sh.counts(); mails != 0 || auths+fails != 0 {
		t.Errorf("MAIL=%d AUTH=%d at a smarthost whose certificate does not verify", mails, auths+fails)
	}
	if rs := h.state(id).Rcpt("bob@remote.test"); rs.Status != "pending" || !strings.Contains(strings.ToLower(rs.LastReply), "certificate") {
		t.Errorf("state %+v: want pending with a certificate error", rs)
	}
}
