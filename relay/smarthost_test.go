package relay_test

import (
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
