package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKill9Durability: a message acknowledged with 250 survives kill -9 of
// the server, byte for byte, and the restarted server and "sluice queue
// list" see it.
func TestKill9Durability(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks", "swaks")
	s := startServer(t, alice)
	want := expectMessage{login: alice.addr, from: alice.addr, to: []string{"carol@remote.test"},
		subject: "durable 9f3a", body: []string{"kept across kill -9"}}
	r := swaks(t, s.submission, "--tls", "PLAIN", alice, alice.addr, "carol@remote.test", want.subject, "kept across kill -9")
	if r.exit != 0 {
		t.Fatalf("swaks:\n%s", r)
	}
	id := queueID(t, r.stdout)
	before := checkSpooled(t, s.dataDir, id, want)

	s.kill9()
	s.restart()

	after := readSpooled(t, s.dataDir, id)
	if !bytes.Equal(after.msg, before.msg) {
		t.Errorf("spooled message %s changed across kill -9 and restart:\nbefore:\n%q\nafter:\n%q", id, before.msg, after.msg)
	}
	if !bytes.Equal(after.raw, before.raw) {
		t.Errorf("spool file %s changed across kill -9 and restart", id)
	}
	if tmp, _ := os.ReadDir(filepath.Join(s.dataDir, "spool", "tmp")); len(tmp) != 0 {
		t.Errorf("spool/tmp not empty after restart: %d files", len(tmp))
	}

	// The restarted server takes mail again.
	r = swaks(t, s.tlsAddr, "--tlsc", "LOGIN", alice, alice.addr, "carol@remote.test", "after restart 9f3a", "second")
	if r.exit != 0 {
		t.Fatalf("swaks after restart:\n%s", r)
	}
	id2 := queueID(t, r.stdout)

	q := s.cli("queue", "list")
	if q.exit != 0 {
		t.Fatalf("sluice queue list:\n%s", q)
	}
	for _, want := range []string{id, id2} {
		found := false
		for _, line := range strings.Split(q.stdout, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == want {
				found = true
				if !strings.Contains(line, alice.addr) {
					t.Errorf("queue list line of %s does not name the login %s: %q", want, alice.addr, line)
				}
			}
		}
		if !found {
			t.Errorf("sluice queue list does not list %s:\n%s", want, q.stdout)
		}
	}
}

// TestWrongPasswordSwaks: a wrong password is refused with 535 5.7.8 and
// nothing is queued.
func TestWrongPasswordSwaks(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks", "swaks")
	s := startServer(t, alice)
	for _, tc := range []struct{ name, mode, mech string }{
		{"starttls-plain", "--tls", "PLAIN"},
		{"implicit-login", "--tlsc", "LOGIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bad := testUser{addr: alice.addr, password: "not-" + alice.password + "-" + tc.name}
			r := swaks(t, addrFor(s, tc.mode), tc.mode, tc.mech, bad, alice.addr, "bob@remote.test", "never "+tc.name, "x")
			if r.exit == 0 {
				t.Errorf("swaks succeeded with a wrong password:\n%s", r)
			}
			if !regexp.MustCompile(`(?m)^<~\* 535 5\.7\.8 `).MatchString(r.stdout) {
				t.Errorf("want a \"535 5.7.8\" reply to AUTH:\n%s", r)
			}
			if strings.Contains(r.stdout, "queued as") {
				t.Errorf("message queued despite the wrong password:\n%s", r)
			}
		})
	}
	t.Cleanup(func() {
		if ids := spoolIDs(t, s.dataDir); len(ids) != 0 {
			t.Errorf("spool holds %v after failed logins", ids)
		}
	})
}

func addrFor(s *sluiceServer, mode string) string {
	if mode == "--tlsc" {
		return s.tlsAddr
	}
	return s.submission
}

// smtpConn is a raw SMTP client for the protocol-level tests.
type smtpConn struct {
	t    testing.TB
	conn net.Conn
	tp   *textproto.Conn
}

func dialSMTP(t testing.TB, addr string) *smtpConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(commandTimeout))
	sc := &smtpConn{t: t, conn: c, tp: textproto.NewConn(c)}
	sc.expect(220, "")
	return sc
}

// cmd sends one command line and returns the reply's code and text (lines
// joined by "\n", without the codes).
func (c *smtpConn) cmd(format string, args ...any) (int, string) {
	c.t.Helper()
	if err := c.tp.PrintfLine(format, args...); err != nil {
		c.t.Fatalf("send %q: %v", fmt.Sprintf(format, args...), err)
	}
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		c.t.Fatalf("reply to %q: %v", fmt.Sprintf(format, args...), err)
	}
	return code, msg
}

// expect reads a reply and checks its code and enhanced code prefix.
func (c *smtpConn) expect(code int, enhanced string) string {
	c.t.Helper()
	got, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	checkReply(c.t, "greeting", got, msg, code, enhanced)
	return msg
}

func checkReply(t testing.TB, what string, code int, msg string, wantCode int, wantEnhanced string) {
	t.Helper()
	if code != wantCode || (wantEnhanced != "" && !strings.HasPrefix(msg, wantEnhanced+" ")) {
		t.Fatalf("%s: got \"%d %s\", want %d %s", what, code, msg, wantCode, wantEnhanced)
	}
}

// startTLS upgrades the connection after "STARTTLS".
func (c *smtpConn) startTLS() {
	c.t.Helper()
	code, msg := c.cmd("STARTTLS")
	checkReply(c.t, "STARTTLS", code, msg, 220, "")
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, ServerName: "mail.sluice.test"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake after STARTTLS: %v", err)
	}
	c.conn = tc
	c.tp = textproto.NewConn(tc)
}

func ehloLines(msg string) []string { return strings.Split(msg, "\n") }

func hasAuth(lines []string) (string, bool) {
	for _, l := range lines {
		if strings.HasPrefix(strings.ToUpper(l), "AUTH") {
			return l, true
		}
	}
	return "", false
}

func plainIR(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// TestAuthNeedsTLS: before STARTTLS the EHLO reply offers no AUTH, and any
// AUTH attempt (even with the right password) gets 538 5.7.11; after
// STARTTLS AUTH PLAIN LOGIN is offered and works.
func TestAuthNeedsTLS(t *testing.T) {
	t.Parallel()
	s := startServer(t, alice)

	for _, tc := range []struct{ name, auth string }{
		{"plain-initial-response", "AUTH PLAIN " + plainIR(alice.addr, alice.password)},
		{"plain-no-initial-response", "AUTH PLAIN"},
		{"login", "AUTH LOGIN"},
		{"login-initial-response", "AUTH LOGIN " + base64.StdEncoding.EncodeToString([]byte(alice.addr))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dialSMTP(t, s.submission)
			code, msg := c.cmd("EHLO client.sluice.test")
			checkReply(t, "EHLO", code, msg, 250, "")
			lines := ehloLines(msg)
			if l, ok := hasAuth(lines); ok {
				t.Errorf("EHLO before STARTTLS advertises %q", l)
			}
			if !containsLine(lines, "STARTTLS") {
				t.Errorf("EHLO does not advertise STARTTLS: %q", lines)
			}
			code, msg = c.cmd("%s", tc.auth)
			checkReply(t, tc.auth, code, msg, 538, "5.7.11")
			// Not logged in: sending is refused.
			code, msg = c.cmd("MAIL FROM:<%s>", alice.addr)
			checkReply(t, "MAIL FROM after refused AUTH", code, msg, 530, "5.7.0")

			c.startTLS()
			code, msg = c.cmd("EHLO client.sluice.test")
			checkReply(t, "EHLO after STARTTLS", code, msg, 250, "")
			if l, ok := hasAuth(ehloLines(msg)); !ok || l != "AUTH PLAIN LOGIN" {
				t.Errorf("EHLO after STARTTLS: AUTH line %q, want \"AUTH PLAIN LOGIN\"", l)
			}
			code, msg = c.cmd("AUTH PLAIN %s", plainIR(alice.addr, alice.password))
			checkReply(t, "AUTH PLAIN over TLS", code, msg, 235, "2.0.0")
			c.cmd("QUIT")
		})
	}
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if strings.EqualFold(strings.TrimSpace(l), want) {
			return true
		}
	}
	return false
}

// TestConfigErrors: a bad configuration stops "sluice serve" with a non-zero
// status and exactly one line on stderr that names the problem.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, toml string
		want       []string // substrings of the one stderr line
	}{
		{"unknown-top-level-key", "hostname = \"mail.sluice.test\"\nbogus_key = 1\n",
			[]string{"bad.toml", `unknown key "bogus_key"`}},
		{"unknown-key-in-table", "[submission]\nlisten = [\"127.0.0.1:1\"]\nmax_conections = 5\n",
			[]string{"bad.toml", `unknown key "submission.max_conections"`}},
		// The broken line is 2; BurntSushi/toml v1.6.0 reports the error at
		// the newline that ends it, which it counts as line 3.
		{"syntax-error-unclosed-table", "hostname = \"mail.sluice.test\"\n[submission\nlisten = []\n",
			[]string{"bad.toml", "line ", "to end table name"}},
		{"syntax-error-missing-equals", "hostname = \"mail.sluice.test\"\ndata_dir \"/tmp\"\n",
			[]string{"bad.toml", "line 2", "expected"}},
		{"bad-duration", "[auth]\n\nfailure_window = \"15 minutes\"\n",
			[]string{"bad.toml", "line 3", `"15 minutes" is not a duration`}},
		{"wrong-type", "[submission]\nmax_recipients = \"ten\"\n",
			[]string{"bad.toml", "max_recipients"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cfg := filepath.Join(dir, "bad.toml")
			if err := os.WriteFile(cfg, []byte(tc.toml), 0o600); err != nil {
				t.Fatal(err)
			}
			r := runCommand(t, dir, cleanEnv(), "", sluiceBin, "serve", "--config", cfg)
			if r.exit == 0 {
				t.Fatalf("sluice serve accepted the bad config:\n%s", r)
			}
			lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
			if len(lines) != 1 || lines[0] == "" {
				t.Fatalf("want exactly one line on stderr, got %d:\n%s", len(lines), r.stderr)
			}
			if !strings.HasPrefix(lines[0], "sluice serve: config ") {
				t.Errorf("stderr line %q does not start with \"sluice serve: config \"", lines[0])
			}
			for _, w := range tc.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("stderr line %q does not contain %q", lines[0], w)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
				t.Errorf("sluice serve created ./data despite the bad config")
			}
		})
	}
}

// TestEmbeddedDefaults: "sluice serve" without --config uses the embedded
// defaults (./data, a self-signed certificate) with the listen addresses
// from the environment, and answers on both ports.
func TestEmbeddedDefaults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stderr := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sluice serve stderr:\n%s", stderr.String())
		}
	})

	var cmd *exec.Cmd
	var done chan struct{}
	var submission, submissions string
	for attempt := 1; ; attempt++ {
		submission, submissions = freeAddr(t), freeAddr(t)
		cmd = exec.Command(sluiceBin, "serve")
		cmd.Dir = dir
		cmd.Env = cleanEnv("SLUICE_SUBMISSION_LISTEN="+submission, "SLUICE_SUBMISSION_LISTEN_TLS="+submissions)
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done = make(chan struct{})
		go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(cmd, done)
		err := waitListening(done, submission, submissions)
		if err == nil {
			break
		}
		cmd.Process.Kill()
		<-done
		if attempt < 3 && strings.Contains(stderr.String(), "address already in use") {
			continue
		}
		t.Fatalf("sluice serve with embedded defaults: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(stopTimeout):
			cmd.Process.Kill()
			<-done
			t.Errorf("sluice serve did not stop within %v of SIGTERM", stopTimeout)
		}
	})

	if fi, err := os.Stat(filepath.Join(dir, "data")); err != nil || !fi.IsDir() {
		t.Errorf("./data was not created: %v", err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, "data", "tls", "selfsigned.crt"))
	if err != nil {
		t.Fatalf("./data/tls/selfsigned.crt was not created: %v", err)
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("selfsigned.crt is not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("selfsigned.crt: %v", err)
	}

	// STARTTLS port: a plain-text greeting, then TLS with that certificate.
	c := dialSMTP(t, submission)
	code, msg := c.cmd("EHLO client.sluice.test")
	checkReply(t, "EHLO", code, msg, 250, "")
	c.startTLS()
	if got := c.conn.(*tls.Conn).ConnectionState().PeerCertificates; len(got) == 0 || !got[0].Equal(cert) {
		t.Errorf("STARTTLS port does not present ./data/tls/selfsigned.crt")
	}
	c.cmd("QUIT")

	// Implicit-TLS port: TLS from the first byte, then the greeting.
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", submissions,
		&tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS to %s: %v", submissions, err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(commandTimeout))
	greeting, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil || !strings.HasPrefix(greeting, "220 ") {
		t.Errorf("implicit-TLS greeting %q, %v; want 220", greeting, err)
	}
	if got := tc.ConnectionState().PeerCertificates; len(got) == 0 || !got[0].Equal(cert) {
		t.Errorf("implicit-TLS port does not present ./data/tls/selfsigned.crt")
	}
}
