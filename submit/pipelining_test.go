package submit_test

import (
	"strings"
	"testing"
	"time"
)

// A client that pipelines (RFC 2920: msmtp, Postfix) gets the replies to
// its group of commands together, in one TLS record, not one record and
// one write per reply; and the message still goes through.
func TestPipelinedRepliesGoOutTogether(t *testing.T) {
	g := startGateway(t)
	c := g.login(t, "info@example.test")
	c.raw("MAIL FROM:<info@example.test>\r\nRCPT TO:<a@remote.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\n")

	// One read of the TLS connection returns one record's content.
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(buf[:n]), "\r\n"), "\r\n")
	want := []string{"250 ", "250 ", "250 ", "354 "}
	if len(got) != len(want) {
		t.Fatalf("first TLS record holds %d replies, want the %d of the pipelined group: %q", len(got), len(want), buf[:n])
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Fatalf("reply %d is %q, want %q...", i+1, got[i], w)
		}
	}
	c.raw(simpleMessage("info@example.test", "a@remote.test", "pipelined") + "\r\n.\r\n")
	if r := c.read(); r.code != 250 {
		t.Fatalf("end of data: %v", r)
	}
	if n := len(queued(g, t)); n != 1 {
		t.Fatalf("%d messages spooled, want 1", n)
	}
}

// A client that waits for each reply before its next command (PHPMailer,
// Python's smtplib) gets each reply at once: nothing waits for a command
// that will not come.
func TestUnpipelinedRepliesAreNotHeld(t *testing.T) {
	g := startGateway(t)
	c := g.login(t, "info@example.test")
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, cmd := range []string{"MAIL FROM:<info@example.test>", "RCPT TO:<a@remote.test>", "DATA"} {
		start := time.Now()
		r := c.cmd(cmd)
		if r.code != 250 && r.code != 354 {
			t.Fatalf("%s: %v", cmd, r)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s: reply after %v", cmd, d)
		}
	}
}
