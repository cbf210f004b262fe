package submit_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/relay/spool"
	"sluice/screen"
	"sluice/submit"
)

// Over max_connections in total (not per IP), a new client gets 421 4.7.0
// on either port (inside TLS on the implicit one) and the refusal is logged.
func TestConnectionLimitTotal(t *testing.T) {
	g := startGateway(t, func(s *submit.Server) { s.Limits.MaxConnections = 2; s.Limits.MaxConnectionsPerIP = 100 })
	dial(t, g.plain, false)
	dial(t, g.implicit, true)
	for _, implicit := range []bool{false, true} {
		var c *client
		if implicit {
			tc, err := tls.Dial("tcp", g.implicit, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			t.Cleanup(func() { tc.Close() })
			c = &client{t: t, conn: tc, r: bufio.NewReader(tc)}
		} else {
			c = dialRaw(t, g.plain)
		}
		if r := c.read(); r.code != 421 || r.enhanced != "4.7.0" || !strings.Contains(r.text, "too busy") {
			t.Fatalf("third connection (implicit TLS %v): %v", implicit, r)
		}
		if r := c.read(); r.code != -1 {
			t.Fatalf("refused connection left open: %v", r)
		}
	}
	if !regexp.MustCompile(`reason=max_connections(\s|$)`).MatchString(g.logs.String()) {
		t.Errorf("refusal not logged with its reason:\n%s", g.logs.String())
	}
}

// A client that stops sending in the middle of DATA gets 421 4.4.2 after
// data_timeout, the connection is closed, and nothing is spooled.
func TestDataTimeout(t *testing.T) {
	g := startGateway(t, func(s *submit.Server) { s.Limits.DataTimeout = 300 * time.Millisecond })
	c := g.login(t, "info@example.test")
	c.cmd("MAIL FROM:<info@example.test>")
	c.cmd("RCPT TO:<bob@remote.test>")
	if r := c.cmd("DATA"); r.code != 354 {
		t.Fatal(r)
	}
	c.raw("From: info@example.test\r\n\r\nhalf a mess")
	if r := c.read(); r.code != 421 || r.enhanced != "4.4.2" {
		t.Fatalf("stalled DATA: %v", r)
	}
	if r := c.read(); r.code != -1 {
		t.Fatalf("connection open after the DATA timeout: %v", r)
	}
	if ids := queued(g, t); len(ids) != 0 {
		t.Fatalf("spooled: %v", ids)
	}
}

// TLS below 1.2 fails the handshake on both ports, even when the caller's
// TLS configuration leaves MinVersion unset.
func TestTLSBelow12Refused(t *testing.T) {
	g := startGateway(t, func(s *submit.Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
	})
	old := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	if c, err := tls.Dial("tcp", g.implicit, old); err == nil {
		c.Close()
		t.Fatalf("TLS 1.1 handshake on the implicit-TLS port succeeded")
	}
	c := dial(t, g.plain, false)
	c.cmd("EHLO client.test")
	if r := c.cmd("STARTTLS"); r.code != 220 {
		t.Fatal(r)
	}
	if err := c.upgrade(old); err == nil {
		t.Fatalf("TLS 1.1 handshake after STARTTLS succeeded")
	}
	// TLS 1.2 works on both.
	tls12 := &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}
	tc, err := tls.Dial("tcp", g.implicit, tls12)
	if err != nil {
		t.Fatalf("TLS 1.2 on the implicit-TLS port: %v", err)
	}
	tc.Close()
	c = dial(t, g.plain, false)
	c.cmd("EHLO client.test")
	c.cmd("STARTTLS")
	if err := c.upgrade(tls12); err != nil {
		t.Fatalf("TLS 1.2 after STARTTLS: %v", err)
	}
}

// A spool that cannot be written (its queue directory is a file: works as
// root too) gives 451 4.3.0 with no internal detail, never 250.
func TestSpoolUnwritableIsTemporaryRefusal(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "queue")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "queue"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, func(s *submit.Server) { s.Spool = sp })
	c := g.login(t, "info@example.test")
	r := c.send("info@example.test", []string{"bob@remote.test"}, simpleMessage("info@example.test", "bob@remote.test", "nowhere"))
	if r.code != 451 || r.enhanced != "4.3.0" {
		t.Fatalf("got %v, want 451 4.3.0", r)
	}
	if strings.Contains(r.text, "/") || strings.Contains(r.text, "spool") || strings.Contains(r.text, "directory") {
		t.Errorf("internal detail leaked to the client: %q", r.text)
	}
	if ids, _ := sp.List(); len(ids) != 0 {
		t.Fatalf("queued: %v", ids)
	}
	if !strings.Contains(g.logs.String(), "spool write failed") {
		t.Errorf("the cause is not in the log:\n%s", g.logs.String())
	}
}

var logField = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// logLine finds the log line with msg=message and id=id and returns its
// fields.
func logLine(t *testing.T, logs, id string) map[string]string {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, "msg=message ") || !strings.Contains(line, " id="+id+" ") {
			continue
		}
		f := map[string]string{}
		for _, m := range logField.FindAllStringSubmatch(line, -1) {
			v := m[2]
			if uq, err := strconv.Unquote(v); err == nil {
				v = uq
			}
			f[m[1]] = v
		}
		return f
	}
	t.Fatalf("no message log line for %s in:\n%s", id, logs)
	return nil
}

// One log line per message outcome, with id, login, sender, recipient
// count, size, verdict and reason; a screened refusal names the rule.
func TestMessageLogLines(t *testing.T) {
	pipeline := &screen.Pipeline{Rules: []screen.Rule{screen.Headers{}}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	g := startGateway(t, func(s *submit.Server) { s.Screen = pipeline })
	c := g.login(t, "info@example.test")
	r := c.send("info@example.test", []string{"a@remote.test", "b@remote.test"}, simpleMessage("info@example.test", "a@remote.test", "logged"))
	if r.code != 250 {
		t.Fatal(r)
	}
	id := strings.TrimPrefix(r.text, "2.0.0 Ok: queued as ")
	env, _, err := g.spool.Read(id)
	if err != nil {
		t.Fatal(err)
	}
	f := logLine(t, g.logs.String(), id)
	want := map[string]string{"id": id, "login": "info@example.test", "sender": "info@example.test", "recipients": "2",
		"size": strconv.Itoa(env.Size), "verdict": "queued", "reason": "accepted"}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("accepted: log field %s=%q, want %q (line %v)", k, f[k], v, f)
		}
	}

	// Refused by a screen rule (8-bit header bytes without SMTPUTF8).
	r = c.send("info@example.test", []string{"a@remote.test"}, "From: info@example.test\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nbody\r\n")
	if r.code != 554 || r.enhanced != "5.6.0" {
		t.Fatalf("8-bit header: %v", r)
	}
	id = refusedID(t, g.logs.String(), "screen")
	f = logLine(t, g.logs.String(), id)
	want = map[string]string{"login": "info@example.test", "sender": "info@example.test", "recipients": "1",
		"verdict": "refused", "code": "554", "stage": "screen", "rule": "headers", "reason": r.text[len("5.6.0 "):]}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("screened: log field %s=%q, want %q (line %v)", k, f[k], v, f)
		}
	}
	if n, _ := strconv.Atoi(f["size"]); n == 0 {
		t.Errorf("screened: no size in %v", f)
	}
}

// refusedID returns the id of the last refused message logged at stage.
func refusedID(t *testing.T, logs, stage string) string {
	t.Helper()
	re := regexp.MustCompile(`msg=message id=(\S+) .*verdict=refused .*stage=` + stage + ` `)
	m := re.FindAllStringSubmatch(logs, -1)
	if m == nil {
		t.Fatalf("no refusal logged at stage %s:\n%s", stage, logs)
	}
	return m[len(m)-1][1]
}

// Close ends connections still in the plaintext part of the submission
// port; Shutdown waits for them, and one that finishes STARTTLS meanwhile
// is served to the end.
func TestShutdownAndCloseCoverPlaintextSessions(t *testing.T) {
	t.Run("Close", func(t *testing.T) {
		g := startGateway(t)
		c := dial(t, g.plain, false)
		c.cmd("EHLO client.test")
		g.srv.Close()
		if r := c.read(); r.code != -1 {
			t.Fatalf("plaintext session open after Close: %v", r)
		}
	})
	t.Run("Shutdown", func(t *testing.T) {
		g := startGateway(t)
		c := dial(t, g.plain, false)
		c.cmd("EHLO client.test")
		// It waits for the open session...
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := g.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown with a plaintext session open returned %v, want the deadline", err)
		}
		// ...no longer accepts...
		if nc, err := net.DialTimeout("tcp", g.plain, time.Second); err == nil {
			nc.SetDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 64)
			if n, _ := nc.Read(buf); n > 0 {
				t.Errorf("new connection served during shutdown: %q", buf[:n])
			}
			nc.Close()
		}
		// ...and the session finishes: STARTTLS, AUTH, a message, QUIT.
		done := make(chan error, 1)
		go func() { done <- g.srv.Shutdown(context.Background()) }()
		c.starttls()
		c.cmd("EHLO client.test")
		if r := c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", testPassword)); r.code != 235 {
			t.Fatalf("AUTH during shutdown: %v", r)
		}
		if r := c.send("info@example.test", []string{"bob@remote.test"}, simpleMessage("info@example.test", "bob@remote.test", "late")); r.code != 250 {
			t.Fatalf("message during shutdown: %v", r)
		}
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v before the session ended", err)
		default:
		}
		c.cmd("QUIT")
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Shutdown did not return after the last session ended")
		}
	})
}
