package submit_test

import (
	"strings"
	"testing"
	"time"

	"sluice/submit"
)

func TestAcceptedMessageIsSpooledWithTraceHeaders(t *testing.T) {
	g := startGateway(t)
	c := g.login(t, "info@example.test")
	r := c.send("info@example.test", []string{"bob@remote.test"}, simpleMessage("Info <info@example.test>", "bob@remote.test", "hello"))
	if r.code != 250 || r.enhanced != "2.0.0" || !strings.HasPrefix(r.text, "2.0.0 Ok: queued as ") {
		t.Fatalf("DATA reply %v", r)
	}
	id := strings.TrimPrefix(r.text, "2.0.0 Ok: queued as ")
	env, msg, err := g.spool.Read(id)
	if err != nil {
		t.Fatalf("queued id %s not in spool: %v", id, err)
	}
	if env.Login != "info@example.test" || env.From != "info@example.test" || len(env.To) != 1 || env.To[0] != "bob@remote.test" {
		t.Errorf("envelope %+v", env)
	}
	s := string(msg)
	for _, want := range []string{"Received: from client.test", "by mx.sluice.test (Sluice) with ESMTPSA id " + id, "authenticated as info@example.test", "\r\nDate: ", "\r\nMessage-ID: <", "Subject: hello\r\n", "\r\n\r\nHello.\r\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("spooled message lacks %q:\n%s", want, s)
		}
	}
	// A message that has Date and Message-ID keeps its own.
	r = c.send("info@example.test", []string{"bob@remote.test"},
		"From: info@example.test\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <own@example.test>\r\n\r\nx\r\n")
	id = strings.TrimPrefix(r.text, "2.0.0 Ok: queued as ")
	_, msg, err = g.spool.Read(id)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(msg), "Date:") != 1 || strings.Count(string(msg), "Message-ID:") != 1 {
		t.Errorf("Date/Message-ID duplicated:\n%s", msg)
	}
}

func TestSessionRefusals(t *testing.T) {
	g := startGateway(t)
	big := strings.Repeat(strings.Repeat("x", 70)+"\r\n", 1000) // 72 KB > 64 KB limit
	cases := []struct {
		name     string
		run      func(t *testing.T) response
		code     int
		enhanced string
		mention  string
	}{
		{"MAIL before AUTH", func(t *testing.T) response {
			c := dial(t, g.plain, false)
			c.cmd("EHLO client.test")
			c.starttls()
			c.cmd("EHLO client.test")
			return c.cmd("MAIL FROM:<info@example.test>")
		}, 530, "5.7.0", "log in"},
		{"AUTH before TLS", func(t *testing.T) response {
			c := dial(t, g.plain, false)
			if r := c.cmd("EHLO client.test"); strings.Contains(r.text, "AUTH") || !strings.Contains(r.text, "STARTTLS") {
				t.Errorf("EHLO before TLS: %v", r)
			}
			return c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", testPassword))
		}, 538, "5.7.11", "start TLS"},
		{"wrong password", func(t *testing.T) response {
			c := dial(t, g.implicit, true)
			if r := c.cmd("EHLO client.test"); !strings.Contains(r.text, "AUTH PLAIN LOGIN") || strings.Contains(r.text, "CRAM") {
				t.Errorf("EHLO over TLS: %v", r)
			}
			return c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", "wrong password 1"))
		}, 535, "5.7.8", "password"},
		{"unknown user", func(t *testing.T) response {
			c := dial(t, g.implicit, true)
			c.cmd("EHLO client.test")
			return c.cmd("AUTH PLAIN %s", plainIR("", "nobody@example.test", testPassword))
		}, 535, "5.7.8", "password"},
		{"PLAIN authzid differs", func(t *testing.T) response {
			c := dial(t, g.implicit, true)
			c.cmd("EHLO client.test")
			return c.cmd("AUTH PLAIN %s", plainIR("other@example.test", "info@example.test", testPassword))
		}, 535, "5.7.8", "authorization identity"},
		{"disabled login", func(t *testing.T) response {
			c := dial(t, g.implicit, true)
			c.cmd("EHLO client.test")
			return c.cmd("AUTH PLAIN %s", plainIR("", "off@example.test", testPassword))
		}, 535, "5.7.8", "disabled"},
		{"CRAM-MD5 not offered", func(t *testing.T) response {
			c := dial(t, g.implicit, true)
			c.cmd("EHLO client.test")
			return c.cmd("AUTH CRAM-MD5")
		}, 504, "5.5.4", "PLAIN or LOGIN"},
		{"MAIL FROM not owned", func(t *testing.T) response {
			return g.login(t, "info@example.test").cmd("MAIL FROM:<ceo@bank.test>")
		}, 553, "5.7.1", "not an address of login info@example.test"},
		{"null sender", func(t *testing.T) response {
			return g.login(t, "info@example.test").cmd("MAIL FROM:<>")
		}, 550, "5.7.1", "bounces"},
		{"SIZE too big", func(t *testing.T) response {
			return g.login(t, "info@example.test").cmd("MAIL FROM:<info@example.test> SIZE=10000000")
		}, 552, "5.3.4", "size"},
		{"too many recipients", func(t *testing.T) response {
			c := g.login(t, "info@example.test")
			c.cmd("MAIL FROM:<info@example.test>")
			for i := 0; i < 5; i++ {
				if r := c.cmd("RCPT TO:<r%d@remote.test>", i); r.code != 250 {
					t.Fatalf("rcpt %d: %v", i, r)
				}
			}
			return c.cmd("RCPT TO:<r6@remote.test>")
		}, 452, "4.5.3", "limit 5"},
		{"recipient without domain", func(t *testing.T) response {
			c := g.login(t, "info@example.test")
			c.cmd("MAIL FROM:<info@example.test>")
			return c.cmd("RCPT TO:<bob>")
		}, 501, "5.5.2", "TO:<address>"},
		{"message too big", func(t *testing.T) response {
			c := g.login(t, "info@example.test")
			r := c.send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\r\n\r\n"+big)
			// The session goes on after the refusal: the body was drained.
			if n := c.cmd("NOOP"); n.code != 250 {
				t.Errorf("after too-big: %v", n)
			}
			return r
		}, 552, "5.3.4", "64 KB"},
		{"bare LF", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\r\n\r\nline one\nline two\r\n")
		}, 554, "5.6.0", "bare CR or LF"},
		{"bare CR", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\r\n\r\nline one\rline two\r\n")
		}, 554, "5.6.0", "bare CR or LF"},
		{"NUL byte", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\r\n\r\nnul\x00here\r\n")
		}, 554, "5.6.0", "NUL"},
		{"line over 998", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\r\n\r\n"+strings.Repeat("y", 999)+"\r\n")
		}, 554, "5.6.0", "998"},
		{"header line over 998", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\r\nSubject: "+strings.Repeat("s", 999)+"\r\n\r\nbody\r\n")
		}, 554, "5.6.0", "header field Subject"},
		{"folded header line over 998", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\r\nTo: a@remote.test,\r\n "+strings.Repeat("t", 999)+"\r\n\r\nbody\r\n")
		}, 554, "5.6.0", "header field To"},
		{"no From header", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "To: bob@remote.test\r\nSubject: x\r\n\r\nbody\r\n")
		}, 550, "5.7.1", "no From header"},
		{"two From headers", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\r\nFrom: info@example.test\r\n\r\nbody\r\n")
		}, 550, "5.7.1", "2 From headers"},
		{"header From not owned", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "From: \"Bank\" <ceo@bank.test>\r\n\r\nbody\r\n")
		}, 550, "5.7.1", "ceo@bank.test is not an address of login info@example.test"},
		{"one of several From addresses not owned", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test, ceo@bank.test\r\n\r\nbody\r\n")
		}, 550, "5.7.1", "ceo@bank.test"},
		{"Sender not owned", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\r\nSender: x@bank.test\r\n\r\nbody\r\n")
		}, 550, "5.7.1", "Sender x@bank.test"},
		{"From without an address", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "From: WordPress\r\n\r\nbody\r\n")
		}, 550, "5.7.1", "no valid address"},
		{"header line without colon", func(t *testing.T) response {
			return g.login(t, "info@example.test").send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\r\nthis is not a header\r\n\r\nbody\r\n")
		}, 554, "5.6.0", "header line 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.run(t)
			if r.code != tc.code || r.enhanced != tc.enhanced {
				t.Fatalf("got %v, want %d %s", r, tc.code, tc.enhanced)
			}
			if !strings.Contains(r.text, tc.mention) {
				t.Errorf("reply %q does not mention %q", r.text, tc.mention)
			}
		})
	}
	if ids := queued(g, t); len(ids) != 0 {
		t.Errorf("refused messages were spooled: %v", ids)
	}
}

func TestGrantsLetLoginSendAsOtherAddresses(t *testing.T) {
	g := startGateway(t)
	c := g.login(t, "info@example.test")
	for _, from := range []string{"sales@example.test", "BILLING@other.test", "Info@Example.TEST"} {
		r := c.send(from, []string{"bob@remote.test"}, simpleMessage(from, "bob@remote.test", "grant"))
		if r.code != 250 {
			t.Errorf("from %s: %v", from, r)
		}
	}
	if r := c.cmd("MAIL FROM:<x@other.test>"); r.code != 553 {
		t.Errorf("address grant must not grant its domain: %v", r)
	}
}

func TestLoginLockout(t *testing.T) {
	g := startGateway(t, func(s *submit.Server) {
		s.Guard = submit.NewMemoryGuard(submit.GuardLimits{PerLogin: 3, PerIP: 100, Window: time.Minute, Lockout: time.Minute})
	})
	c := dial(t, g.implicit, true)
	c.cmd("EHLO client.test")
	// The same wrong password again and again is one guess, not many.
	for i := 0; i < 6; i++ {
		if r := c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", "stale saved password")); r.code != 535 {
			t.Fatalf("repeat %d: %v", i, r)
		}
	}
	c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", "guess two"))
	r := c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", "guess three"))
	if r.code != 421 || r.enhanced != "4.7.0" || !strings.Contains(r.text, "too many failed logins for info@example.test") {
		t.Fatalf("third distinct wrong password: %v", r)
	}
	if n := c.read(); n.code != -1 {
		t.Fatalf("connection not closed after lockout: %v", n)
	}
	// Even the right password is refused while locked, on a new connection.
	c2 := dial(t, g.implicit, true)
	c2.cmd("EHLO client.test")
	if r := c2.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", testPassword)); r.code != 421 || r.enhanced != "4.7.0" {
		t.Fatalf("locked login with right password: %v", r)
	}
}

func TestAuthLoginMechanism(t *testing.T) {
	g := startGateway(t)
	c := dial(t, g.implicit, true)
	c.cmd("EHLO client.test")
	if r := c.cmd("AUTH LOGIN"); r.code != 334 || r.text != "VXNlcm5hbWU6" {
		t.Fatalf("AUTH LOGIN: %v", r)
	}
	if r := c.cmd("aW5mb0BleGFtcGxlLnRlc3Q="); r.code != 334 || r.text != "UGFzc3dvcmQ6" {
		t.Fatalf("username step: %v", r)
	}
	if r := c.cmd("Y29ycmVjdCBob3JzZSBiYXR0ZXJ5"); r.code != 235 {
		t.Fatalf("password step: %v", r)
	}
}

func TestConnectionLimitPerIP(t *testing.T) {
	g := startGateway(t, func(s *submit.Server) { s.Limits.MaxConnectionsPerIP = 2 })
	dial(t, g.plain, false)
	dial(t, g.plain, false)
	c := dialRaw(t, g.plain)
	r := c.read()
	if r.code != 421 || r.enhanced != "4.7.0" || !strings.Contains(r.text, "too busy") {
		t.Fatalf("third connection: %v", r)
	}
}

func TestIdleTimeout(t *testing.T) {
	g := startGateway(t, func(s *submit.Server) { s.Limits.IdleTimeout = 300 * time.Millisecond })
	c := dial(t, g.plain, false)
	r := c.read() // nothing sent: the server gives up
	if r.code != 421 || r.enhanced != "4.4.2" {
		t.Fatalf("idle: %v", r)
	}
}

func TestUserFileChangesApplyWithoutRestart(t *testing.T) {
	g := startGateway(t)
	addUser(t, g.users, "new@example.test", testPassword, nil, false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dial(t, g.implicit, true)
		c.cmd("EHLO client.test")
		r := c.cmd("AUTH PLAIN %s", plainIR("", "new@example.test", testPassword))
		if r.code == 235 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new login never accepted: %v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
