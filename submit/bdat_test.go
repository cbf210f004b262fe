package submit_test

import (
	"fmt"
	"strings"
	"testing"
)

// CHUNKING (RFC 3030) is offered after TLS: BDAT must give one reply per
// chunk, refuse an oversize message once and keep the session, and let
// RSET abort a transfer without breaking the connection.

// bdatSend sends the chunks of one message (the last with LAST) after MAIL
// and RCPT and returns the reply to the last chunk, or the first reply that
// was not 250.
func (c *client) bdatSend(from, to string, chunks ...string) response {
	c.t.Helper()
	if r := c.cmd("MAIL FROM:<%s>", from); r.code != 250 {
		return r
	}
	if r := c.cmd("RCPT TO:<%s>", to); r.code != 250 {
		return r
	}
	var r response
	for i, ch := range chunks {
		last := ""
		if i == len(chunks)-1 {
			last = " LAST"
		}
		c.raw(fmt.Sprintf("BDAT %d%s\r\n%s", len(ch), last, ch))
		if r = c.read(); r.code != 250 || last != "" {
			return r
		}
	}
	return r
}

func TestBDATAcceptedByteExact(t *testing.T) {
	g := startGateway(t)
	c := g.login(t, "info@example.test")
	if r := c.cmd("EHLO client.test"); !strings.Contains(r.text, "CHUNKING") {
		t.Fatalf("CHUNKING not offered after TLS: %v", r)
	}
	msg := "From: info@example.test\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bdat@example.test>\r\n\r\n" +
		".a line with a leading dot\r\n.\r\nand the end\r\n"
	r := c.bdatSend("info@example.test", "bob@remote.test", msg[:30], msg[30:61], msg[61:])
	if r.code != 250 || r.enhanced != "2.0.0" {
		t.Fatalf("BDAT LAST: %v", r)
	}
	_, spooled, err := g.spool.Read(strings.TrimPrefix(r.text, "2.0.0 Ok: queued as "))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(spooled), msg) {
		t.Fatalf("spooled message does not end with the chunks as sent:\n%q", spooled)
	}
}

func TestBDATRefusals(t *testing.T) {
	g := startGateway(t)
	big := strings.Repeat(strings.Repeat("b", 70)+"\r\n", 1000) // 72 KB > 64 KB
	cases := []struct {
		name     string
		run      func(c *client) response
		code     int
		enhanced string
		mention  string
	}{
		{"oversize chunk", func(c *client) response {
			return c.bdatSend("info@example.test", "bob@remote.test", "From: info@example.test\r\n\r\n", big)
		}, 552, "5.3.4", "64 KB"},
		{"oversize first chunk", func(c *client) response {
			return c.bdatSend("info@example.test", "bob@remote.test", "From: info@example.test\r\n\r\n"+big)
		}, 552, "5.3.4", "64 KB"},
		{"RSET in the middle", func(c *client) response {
			c.cmd("MAIL FROM:<info@example.test>")
			c.cmd("RCPT TO:<bob@remote.test>")
			c.raw("BDAT 27\r\nFrom: info@example.test\r\n\r\n")
			if r := c.read(); r.code != 250 {
				return r
			}
			return c.cmd("RSET")
		}, 250, "2.0.0", ""},
		{"bare LF in a chunk", func(c *client) response {
			return c.bdatSend("info@example.test", "bob@remote.test", "From: info@example.test\r\n\r\nline\n.\nMAIL FROM:<x@example.test>\r\n")
		}, 554, "5.6.0", "bare CR or LF"},
		{"CRLF.CR in a chunk", func(c *client) response {
			return c.bdatSend("info@example.test", "bob@remote.test", "From: info@example.test\r\n\r\nline\r\n.\rMAIL FROM:<x@example.test>\r\n")
		}, 554, "5.6.0", "bare CR"},
		{"BDAT before RCPT", func(c *client) response {
			c.cmd("MAIL FROM:<info@example.test>")
			c.raw("BDAT 5 LAST\r\nhello")
			return c.read()
		}, 554, "5.5.1", "RCPT TO"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := g.login(t, "info@example.test")
			r := tc.run(c)
			if r.code != tc.code || r.enhanced != tc.enhanced || !strings.Contains(r.text, tc.mention) {
				t.Fatalf("got %v, want %d %s naming %q", r, tc.code, tc.enhanced, tc.mention)
			}
			// One reply, and the session goes on: no 421, no EOF.
			if n := c.cmd("NOOP"); n.code != 250 {
				t.Fatalf("after the refusal: %v", n)
			}
			if r := c.send("info@example.test", []string{"bob@remote.test"}, simpleMessage("info@example.test", "bob@remote.test", "after")); r.code != 250 {
				t.Fatalf("next message on the same connection: %v", r)
			}
		})
	}
	for _, id := range queued(g, t) {
		_, msg, _ := g.spool.Read(id)
		if !strings.Contains(string(msg), "Subject: after") {
			t.Errorf("a refused BDAT message was spooled: %s", id)
		}
	}
}

// A BDAT message pipelined behind another is judged on its own bytes.
func TestBDATPipelinedMessagesJudgedApart(t *testing.T) {
	g := startGateway(t)
	c := g.login(t, "info@example.test")
	clean := "From: info@example.test\r\nSubject: clean\r\n\r\nok\r\n"
	bad := "From: info@example.test\r\nSubject: bad\r\n\r\nx\r\n.\rMAIL FROM:<x@example.test>\r\n"
	tx := func(body string) string {
		return fmt.Sprintf("MAIL FROM:<info@example.test>\r\nRCPT TO:<bob@remote.test>\r\nBDAT %d LAST\r\n%s", len(body), body)
	}
	c.raw(tx(clean) + tx(bad) + tx(clean))
	for i, want := range []int{250, 250, 250, 250, 250, 554, 250, 250, 250} {
		if r := c.read(); r.code != want {
			t.Fatalf("reply %d: %v, want %d", i, r, want)
		}
	}
	if n := len(queued(g, t)); n != 2 {
		t.Fatalf("%d spooled, want the 2 clean ones", n)
	}
}
