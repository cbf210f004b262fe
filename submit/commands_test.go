package submit_test

import (
	"strings"
	"testing"

	"sluice/submit"
)

// goSMTPTexts are reply texts of go-smtp v0.25.1 that must never reach a
// client: each has a Sluice sentence instead.
var goSMTPTexts = []string{
	"Bad command", "Too many errors", "Quiting", "Max message size exceeded", "Invalid base64 data",
	"Too long line", "command unrecognized", "command not implemented", "Was expecting", "Missing RCPT TO",
	"Missing MAIL FROM", "Please introduce yourself", "Unknown MAIL FROM argument", "TLS not supported",
	"Error: bad syntax", "should not have any arguments", "Malformed size argument", "Idle timeout",
}

func checkNoGoSMTPText(t *testing.T, r response) {
	t.Helper()
	for _, s := range goSMTPTexts {
		if strings.Contains(r.text, s) {
			t.Errorf("go-smtp's own text %q reached the client: %v", s, r)
		}
	}
}

// Bad commands after TLS get Sluice's code and sentence, not go-smtp's.
func TestBadCommandsGetOurReplies(t *testing.T) {
	g := startGateway(t)
	cases := []struct {
		name     string
		login    bool
		cmds     []string // the last one's reply is checked
		code     int
		enhanced string
		mention  string
		closes   bool
	}{
		{"unrecognized command", false, []string{"XYZZ now"}, 500, "5.5.2", "unrecognized", false},
		{"mangled command", false, []string{"AB"}, 501, "5.5.2", "command", false},
		{"empty line", false, []string{""}, 500, "5.5.2", "command", false},
		{"HELP", false, []string{"HELP"}, 502, "5.5.1", "not offered", false},
		{"MAIL without EHLO", false, []string{"RSET", "MAIL FROM:<a@example.test>"}, 503, "5.5.1", "EHLO", false},
		{"AUTH bad base64", false, []string{"EHLO client.test", "AUTH PLAIN !!!notbase64"}, 501, "5.5.2", "base64", false},
		{"AUTH without mechanism", false, []string{"EHLO client.test", "AUTH"}, 501, "5.5.4", "PLAIN", false},
		{"STARTTLS inside TLS", false, []string{"EHLO client.test", "STARTTLS"}, 503, "5.5.1", "already", false},
		{"MAIL syntax", true, []string{"MAIL TO:<info@example.test>"}, 501, "5.5.2", "MAIL FROM:<address>", false},
		{"MAIL SIZE not a number", true, []string{"MAIL FROM:<info@example.test> SIZE=big"}, 501, "5.5.4", "SIZE", false},
		{"MAIL unknown parameter", true, []string{"MAIL FROM:<info@example.test> FROBNICATE=1"}, 555, "5.5.4", "parameter", false},
		{"MAIL DSN parameter", true, []string{"MAIL FROM:<info@example.test> RET=FULL"}, 555, "5.5.4", "parameter", false},
		{"MAIL SIZE over the limit", true, []string{"MAIL FROM:<info@example.test> SIZE=999999999"}, 552, "5.3.4", "64 KB", false},
		{"RCPT before MAIL", true, []string{"RCPT TO:<bob@remote.test>"}, 503, "5.5.1", "MAIL FROM", false},
		{"DATA without recipients", true, []string{"MAIL FROM:<info@example.test>", "DATA"}, 554, "5.5.1", "RCPT TO", false},
		{"DATA with an argument", true, []string{"MAIL FROM:<info@example.test>", "RCPT TO:<bob@remote.test>", "DATA now"}, 501, "5.5.4", "DATA", false},
		{"AUTH twice", true, []string{"AUTH PLAIN " + plainIR("", "info@example.test", testPassword)}, 503, "5.5.1", "already logged in", false},
		{"BDAT without size", true, []string{"MAIL FROM:<info@example.test>", "RCPT TO:<bob@remote.test>", "BDAT LAST"}, 501, "5.5.4", "BDAT", true},
		{"command line too long", false, []string{"NOOP " + strings.Repeat("x", 4100)}, 500, "5.5.2", "longer than", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c *client
			if tc.login {
				c = g.login(t, "info@example.test")
			} else {
				c = dial(t, g.implicit, true)
			}
			var r response
			for _, cmd := range tc.cmds {
				r = c.cmd("%s", cmd)
			}
			if tc.closes && r.code == 250 {
				// go-smtp runs a too-long line cut at what it had
				// buffered (the NOOP) before it sees the limit; then
				// comes the refusal.
				r = c.read()
			}
			if r.code != tc.code || r.enhanced != tc.enhanced || !strings.Contains(r.text, tc.mention) {
				t.Errorf("got %v, want %d %s naming %q", r, tc.code, tc.enhanced, tc.mention)
			}
			checkNoGoSMTPText(t, r)
			if tc.closes {
				if n := c.read(); n.code != -1 {
					t.Errorf("connection still open: %v", n)
				}
				return
			}
			if n := c.cmd("NOOP"); n.code != 250 {
				t.Errorf("NOOP after the refusal: %v", n)
			}
		})
	}
}

// max_command_errors: the Nth bad command is answered, then 421 4.7.0 and
// the connection closes; before TLS and after it; and go-smtp's own limit
// (4 unrecognized commands) ends in the same reply, not its own text.
func TestTooManyBadCommands(t *testing.T) {
	g := startGateway(t, func(s *submit.Server) { s.Limits.MaxCommandErrors = 3 })
	cases := []struct {
		name string
		open func(t *testing.T) *client
		bad  string
	}{
		{"before TLS", func(t *testing.T) *client { return dial(t, g.plain, false) }, "XYZZY"},
		{"after TLS, bad syntax", func(t *testing.T) *client { return g.login(t, "info@example.test") }, "MAIL TO:<info@example.test>"},
		{"after TLS, unrecognized", func(t *testing.T) *client { return dial(t, g.implicit, true) }, "XYZZY"},
		{"counted across STARTTLS", func(t *testing.T) *client {
			c := dial(t, g.plain, false)
			c.cmd("XYZZY")
			c.cmd("EHLO client.test")
			c.starttls()
			c.cmd("XYZZY")
			return c
		}, "EHLO"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.open(t)
			n := 3
			if tc.name == "counted across STARTTLS" {
				n = 1
			}
			for i := 1; i <= n; i++ {
				r := c.cmd("%s", tc.bad)
				if r.code/100 != 5 {
					t.Fatalf("bad command %d: %v", i, r)
				}
				checkNoGoSMTPText(t, r)
			}
			r := c.read()
			if r.code != 421 || r.enhanced != "4.7.0" || !strings.Contains(r.text, "too many") {
				t.Fatalf("after %d bad commands: %v, want 421 4.7.0", n, r)
			}
			if r := c.read(); r.code != -1 {
				t.Fatalf("connection still open: %v", r)
			}
		})
	}
	// With the default (10), go-smtp's own limit of 4 unrecognized commands
	// still ends the session, in our words.
	g2 := startGateway(t)
	c := dial(t, g2.implicit, true)
	for i := 1; i <= 4; i++ {
		c.cmd("XYZZY")
	}
	if r := c.read(); r.code != 421 || r.enhanced != "4.7.0" {
		t.Fatalf("after go-smtp's limit: %v, want 421 4.7.0", r)
	}
}

// The greeting on the implicit-TLS port is ours too.
func TestImplicitTLSGreetingIsOurs(t *testing.T) {
	g := startGateway(t)
	c := dial(t, g.implicit, true)
	if !strings.HasPrefix(c.greeting.text, "mx.sluice.test ESMTP") || strings.Contains(c.greeting.text, "Service Ready") {
		t.Fatalf("implicit-TLS greeting %v", c.greeting)
	}
}
