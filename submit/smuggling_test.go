package submit_test

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// smugInner is the second message a smuggler hides behind a non-standard
// end of data.
const smugInner = "MAIL FROM:<info@example.test>\r\nRCPT TO:<victim@remote.test>\r\nDATA\r\nFrom: info@example.test\r\n\r\nsmuggled\r\n.\r\n"

// SMTP smuggling (CVE-2023-51766 family): a client hides a second message
// behind a non-standard end-of-data. Every variant must get one 554 5.6.0
// and no second message; the session goes on in step (the next command
// gets its own reply). Each case is written as the client sends it; a "|"
// splits it into separate writes (separate TLS records, so separate reads
// on the server).
func TestSmugglingVariantsRefusedWithOneReply(t *testing.T) {
	g := startGateway(t)
	hdr := "From: info@example.test\r\n\r\n"
	cases := []struct {
		name string
		data string // after the 354, "|" between writes
	}{
		{"LF.LF", hdr + "first\n.\n" + smugInner},
		{"LF.CRLF", hdr + "first\n.\r\n" + smugInner},
		{"CR.CR", hdr + "first\r.\r" + smugInner},
		{"CRLF.LF", hdr + "first\r\n.\n" + smugInner},
		{"CR.CRLF", hdr + "first\r.\r\n" + smugInner},
		// go-smtp's reader drops ".\r" here and would spool the rest.
		{"CRLF.CR+X", hdr + "first\r\n.\r" + smugInner},
		{"CRLF.CR.CRLF", hdr + "first\r\n.\r.\r\n" + smugInner},
		{"CRLF.CR split across reads", hdr + "first\r\n.|\r|" + smugInner},
		{"CRLF.CR+CR split across reads", hdr + "first\r\n.\r|\r" + smugInner},
		// The message ends in "\r\n.\r", then the client's own CRLF.CRLF:
		// go-smtp never saw that end and waited for more.
		{"CRLF.CR at the very end", hdr + "first\r\n.\r\r\n.\r\n"},
		{"CRLF.CR at the very end, split", hdr + "first\r\n.\r|\r\n.\r\n"},
		{"dot-CR first line of DATA", ".\r" + smugInner},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := g.login(t, "info@example.test")
			c.conn.SetDeadline(time.Now().Add(5 * time.Second))
			c.cmd("MAIL FROM:<info@example.test>")
			c.cmd("RCPT TO:<bob@remote.test>")
			if r := c.cmd("DATA"); r.code != 354 {
				t.Fatal(r)
			}
			for _, w := range strings.Split(tc.data, "|") {
				c.raw(w)
			}
			r := c.read()
			if r.code != 554 || r.enhanced != "5.6.0" || !strings.Contains(r.text, "smuggling") {
				t.Fatalf("got %v, want 554 5.6.0 naming SMTP smuggling", r)
			}
			if n := c.cmd("NOOP"); n.code != 250 {
				t.Fatalf("a second reply was pending (smuggled command answered): %v", n)
			}
		})
	}
	if ids := queued(g, t); len(ids) != 0 {
		t.Errorf("smuggled mail spooled: %v", ids)
	}
	if strings.Contains(g.logs.String(), "victim@remote.test") {
		t.Errorf("a smuggled command reached the session:\n%s", g.logs.String())
	}
}

// The pattern is "\r\n.\r" followed by something other than "\n"; the reply
// names it.
func TestSmuggledDotCRNamed(t *testing.T) {
	g := startGateway(t)
	c := g.login(t, "info@example.test")
	r := c.send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\r\n\r\nfirst\r\n.\rX\r\n")
	if r.code != 554 || r.enhanced != "5.6.0" || !strings.Contains(r.text, "bare CR") {
		t.Fatalf("got %v, want 554 5.6.0 naming the bare CR", r)
	}
	if !strings.Contains(g.logs.String(), "stage=hygiene") {
		t.Errorf("refusal not logged at the hygiene stage:\n%s", g.logs.String())
	}
}

// A normal dot-stuffed message passes and is spooled byte for byte as the
// client meant it (dots unstuffed, nothing else changed).
func TestDotStuffedMessageSpooledByteExact(t *testing.T) {
	g := startGateway(t)
	c := g.login(t, "info@example.test")
	orig := "From: info@example.test\r\nTo: bob@remote.test\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <dots@example.test>\r\nSubject: dots\r\n\r\n" +
		".leading dot\r\n.\r\n..\r\n...\r\n. \r\nend.\r\n.\r\n"
	stuffed := strings.ReplaceAll(orig, "\r\n.", "\r\n..")
	c.cmd("MAIL FROM:<info@example.test>")
	c.cmd("RCPT TO:<bob@remote.test>")
	if r := c.cmd("DATA"); r.code != 354 {
		t.Fatal(r)
	}
	c.raw(stuffed + ".\r\n")
	r := c.read()
	if r.code != 250 {
		t.Fatalf("dot-stuffed message: %v", r)
	}
	_, msg, err := g.spool.Read(strings.TrimPrefix(r.text, "2.0.0 Ok: queued as "))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(msg, []byte(orig))
	if i < 0 || i+len(orig) != len(msg) {
		t.Fatalf("spooled message does not end with the original:\n%q", msg)
	}
	if prefix := string(msg[:i]); !strings.HasPrefix(prefix, "Received: ") || strings.Count(prefix, "\r\n\t") != strings.Count(prefix, "\r\n")-1 {
		t.Errorf("more than the Received field was added in front: %q", prefix)
	}
}

// Bytes pipelined after the end of one message belong to the next: a clean
// message is not tainted by a smuggling pattern in the one after it, nor
// the other way round, nor by such a pattern in a command line.
func TestSmugglingFlagBelongsToItsOwnMessage(t *testing.T) {
	g := startGateway(t)
	clean := func(subject string) string {
		return "From: info@example.test\r\nSubject: " + subject + "\r\n\r\nclean\r\n.\r\n"
	}
	smuggled := "From: info@example.test\r\nSubject: bad\r\n\r\nfirst\r\n.\rX\r\n.\r\n"
	next := "MAIL FROM:<info@example.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\n"
	cases := []struct {
		name   string
		first  string // after the first 354, with the pipelined commands of the second
		second string // after the second 354
		want   [2]int
	}{
		{"clean then smuggled", clean("one") + next, smuggled, [2]int{250, 554}},
		{"smuggled then clean", smuggled + next, clean("two"), [2]int{554, 250}},
		{"pattern in a command line", clean("three") + ".\rX\r\n" + next, clean("four"), [2]int{250, 250}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(queued(g, t))
			c := g.login(t, "info@example.test")
			c.cmd("MAIL FROM:<info@example.test>")
			c.cmd("RCPT TO:<a@remote.test>")
			if r := c.cmd("DATA"); r.code != 354 {
				t.Fatal(r)
			}
			c.raw(tc.first)
			if r := c.read(); r.code != tc.want[0] {
				t.Fatalf("first message: %v, want %d", r, tc.want[0])
			}
			if strings.Contains(tc.first, ".\rX\r\n"+next) {
				if r := c.read(); r.code/100 != 5 {
					t.Fatalf("command line \".\\rX\": %v, want a 5xx", r)
				}
			}
			for _, want := range []int{250, 250, 354} {
				if r := c.read(); r.code != want {
					t.Fatalf("pipelined commands: %v, want %d", r, want)
				}
			}
			c.raw(tc.second)
			if r := c.read(); r.code != tc.want[1] {
				t.Fatalf("second message: %v, want %d", r, tc.want[1])
			}
			accepted := 0
			for _, w := range tc.want {
				if w == 250 {
					accepted++
				}
			}
			if n := len(queued(g, t)) - before; n != accepted {
				t.Fatalf("%d messages spooled, want %d", n, accepted)
			}
		})
	}
}

// STARTTLS: plaintext pipelined after the command is discarded (the
// CVE-2011-0411 class), and after the handshake the server waits for the
// client to speak (no second greeting).
func TestStartTLSDiscardsPipelinedPlaintext(t *testing.T) {
	g := startGateway(t)
	c := dial(t, g.plain, false)
	c.cmd("EHLO client.test")
	c.raw("STARTTLS\r\nMAIL FROM:<info@example.test>\r\n")
	if r := c.read(); r.code != 220 || r.enhanced != "2.0.0" {
		t.Fatalf("STARTTLS: %v", r)
	}
	if err := c.upgrade(nil); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	r := c.cmd("EHLO client.test")
	if r.code != 250 || !strings.Contains(r.text, "AUTH PLAIN LOGIN") {
		t.Fatalf("first reply inside TLS is not the EHLO reply (greeting or injected command answered): %v", r)
	}
	if r := c.cmd("QUIT"); r.code != 221 {
		t.Fatalf("QUIT: %v (a reply to the injected command was pending?)", r)
	}
}

// Before TLS the submission port offers STARTTLS and no AUTH, answers the
// few commands that make sense in plaintext, and tells a client that tries
// to send what to do.
func TestPlaintextCommandsBeforeTLS(t *testing.T) {
	g := startGateway(t)
	c := dial(t, g.plain, false)
	r := c.cmd("EHLO client.test")
	for _, want := range []string{"STARTTLS", "SIZE 65536", "ENHANCEDSTATUSCODES", "PIPELINING"} {
		if !strings.Contains(r.text, want) {
			t.Errorf("EHLO before TLS lacks %s: %v", want, r)
		}
	}
	if strings.Contains(r.text, "AUTH") || !strings.HasPrefix(r.text, "mx.sluice.test") {
		t.Errorf("EHLO before TLS: %v", r)
	}
	steps := []struct {
		cmd      string
		code     int
		enhanced string
		mention  string
	}{
		{"HELO client.test", 250, "", "mx.sluice.test"},
		{"NOOP", 250, "2.0.0", ""},
		{"RSET", 250, "2.0.0", ""},
		{"MAIL FROM:<info@example.test>", 530, "5.7.0", "STARTTLS"},
		{"RCPT TO:<bob@remote.test>", 530, "5.7.0", "465"},
		{"DATA", 530, "5.7.0", "STARTTLS"},
		{"AUTH LOGIN", 538, "5.7.11", "start TLS"},
		{"EHLO", 501, "5.5.4", "host name"},
		{"STARTTLS now", 501, "5.5.4", "STARTTLS"},
		{"XYZZY", 500, "5.5.2", "unrecognized"},
		{"QUIT", 221, "2.0.0", ""},
	}
	for _, s := range steps {
		r := c.cmd("%s", s.cmd)
		if r.code != s.code || r.enhanced != s.enhanced || !strings.Contains(r.text, s.mention) {
			t.Errorf("%s: got %v, want %d %s naming %q", s.cmd, r, s.code, s.enhanced, s.mention)
		}
	}
	if r := c.read(); r.code != -1 {
		t.Errorf("connection open after QUIT: %v", r)
	}
}
