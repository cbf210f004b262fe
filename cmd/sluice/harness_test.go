package main

// Integration tests: they build the sluice binary once, run "sluice serve"
// as a subprocess on free loopback ports and talk to it the way users do,
// with the sluice CLI, raw SMTP and (in clients_test.go) real mail clients.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// sluiceBin is the binary built by TestMain.
var sluiceBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sluice-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	sluiceBin = filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-o", sluiceBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration tests: go build failed:", err)
		return 1
	}
	return m.Run()
}

// Timeouts: how long a server may take to come up or go down, and how long
// any one client or CLI command may run.
const (
	startTimeout   = 15 * time.Second
	stopTimeout    = 10 * time.Second
	commandTimeout = 60 * time.Second
)

// queuedRe matches the reply to a successful DATA and captures the queue ID
// (16 characters of Crockford base32, upper case).
var queuedRe = regexp.MustCompile(`(?m)250 2\.0\.0 Ok: queued as ([0-9A-HJKMNP-TV-Z]{16})\r?$`)

var idRe = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{16}$`)

// syncBuffer is a bytes.Buffer safe for a subprocess writer and a reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// cleanEnv is the test process environment without SLUICE_* variables, so
// that a developer's settings cannot override the test configuration.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// result is what a finished command left behind.
type result struct {
	stdout, stderr string
	exit           int
}

func (r result) String() string {
	return fmt.Sprintf("exit status %d\n--- stdout:\n%s\n--- stderr:\n%s", r.exit, r.stdout, r.stderr)
}

// runCommand runs a command to its end (at most commandTimeout). A command
// that cannot be started, or is killed by the timeout, fails the test.
func runCommand(t testing.TB, dir string, env []string, stdin string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s: still running after %v\n%s", name, strings.Join(args, " "), commandTimeout, r)
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

// requireTool returns the path of a client program the test needs. When it
// is missing the test is skipped, except on CI where it fails: there the
// tool is part of the test environment.
func requireTool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missingTool(t, name, debianPackage)
	}
	return p
}

// requireFile is requireTool for a library installed as files.
func requireFile(t testing.TB, path, debianPackage string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		missingTool(t, path, debianPackage)
	}
}

func missingTool(t testing.TB, what, debianPackage string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; on CI it must be: apt-get install %s", what, debianPackage)
	}
	t.Skipf("%s is not installed (apt-get install %s)", what, debianPackage)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago. startServer retries when another process took it in between.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// testUser is a login created with "sluice user add" before the server
// starts.
type testUser struct {
	addr, password string
	grants         []string
}

var alice = testUser{addr: "alice@example.test", password: "alice-secret-pw", grants: []string{"@example.test"}}

// sluiceServer is one "sluice serve" subprocess with its own configuration
// and data directory.
type sluiceServer struct {
	t          testing.TB
	dir        string
	configPath string
	dataDir    string
	submission string // STARTTLS listener, 127.0.0.1:PORT
	tlsAddr    string // implicit-TLS listener
	stderr     *syncBuffer

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	err  error         // cmd.Wait's error, valid after done
	// stopping is set when the test ends the process on purpose.
	stopping bool
}

const configTemplate = `# written by the integration test
hostname = "mail.sluice.test"
data_dir = %q

[log]
format = "text"
level = "debug"

[submission]
listen = [%q]
listen_tls = [%q]
max_message_size = 1048576
max_recipients = 10
max_connections = 200
max_connections_per_ip = 100

[dns]
# Nothing listens here: delivery attempts fail at once and the messages
# stay queued, so the tests can inspect the spool. No query leaves the
# machine.
resolver = "127.0.0.1:9"

[spool]
# A file per message from the 250 on, so that the tests can read it at
# once; the journal (the default) has tests of its own (withJournal).
journal = false

[auth]
max_failures_per_login = 5
max_failures_per_ip = 20
failure_window = "15m"
lockout = "15m"
`

// withJournal in front of the extra TOML of startServerWith turns the spool
// journal back on.
const withJournal = "\n# with the journal\n"

// startServer writes a configuration with free loopback ports into a
// temporary directory, adds the users with the CLI, starts "sluice serve"
// and waits until both ports accept connections. The server is stopped, and
// its stderr printed if the test failed, when the test ends.
func startServer(t testing.TB, users ...testUser) *sluiceServer {
	t.Helper()
	return startServerWith(t, "", users...)
}

// startServerWith is startServer with extra TOML appended to the config.
func startServerWith(t testing.TB, extra string, users ...testUser) *sluiceServer {
	t.Helper()
	s := &sluiceServer{t: t, dir: t.TempDir(), stderr: &syncBuffer{}}
	s.configPath = filepath.Join(s.dir, "sluice.toml")
	s.dataDir = filepath.Join(s.dir, "data")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sluice serve stderr:\n%s", s.stderr.String())
		}
	})
	t.Cleanup(s.stop)

	for attempt := 1; ; attempt++ {
		s.submission, s.tlsAddr = freeAddr(t), freeAddr(t)
		cfg := fmt.Sprintf(configTemplate, s.dataDir, s.submission, s.tlsAddr) + extra
		if strings.HasPrefix(extra, withJournal) {
			cfg = strings.Replace(cfg, "journal = false", "journal = true", 1)
		}
		if err := os.WriteFile(s.configPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if attempt == 1 {
			for _, u := range users {
				s.addUser(u)
			}
		}
		err := s.start()
		if err == nil {
			return s
		}
		s.stopping = true
		if s.done != nil {
			select {
			case <-s.done:
			default:
				s.cmd.Process.Kill()
				<-s.done
			}
		}
		if attempt < 3 && strings.Contains(s.stderr.String(), "address already in use") {
			fmt.Fprintf(s.stderr, "--- port taken, retrying with other ports\n")
			continue
		}
		t.Fatalf("sluice serve did not start: %v\nstderr:\n%s", err, s.stderr.String())
	}
}

// addUser runs "sluice user add" with the password on stdin.
func (s *sluiceServer) addUser(u testUser) {
	s.t.Helper()
	args := []string{"user", "add", u.addr, "--password-stdin", "--config", s.configPath}
	for _, g := range u.grants {
		args = append(args, "--grant", g)
	}
	r := runCommand(s.t, s.dir, cleanEnv(), u.password+"\n", sluiceBin, args...)
	if r.exit != 0 || !strings.Contains(r.stdout, "added login "+u.addr) {
		s.t.Fatalf("sluice user add %s:\n%s", u.addr, r)
	}
}

// cli runs another sluice subcommand against this server's configuration.
func (s *sluiceServer) cli(args ...string) result {
	s.t.Helper()
	return runCommand(s.t, s.dir, cleanEnv(), "", sluiceBin, append(args, "--config", s.configPath)...)
}

// start starts "sluice serve" and waits for both listeners.
func (s *sluiceServer) start() error {
	s.cmd = exec.Command(sluiceBin, "serve", "--config", s.configPath)
	s.cmd.Dir = s.dir
	s.cmd.Env = cleanEnv()
	s.cmd.Stdout = s.stderr
	s.cmd.Stderr = s.stderr
	s.stopping = false
	s.done = nil
	if err := s.cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	s.done = done
	cmd := s.cmd
	go func() {
		s.err = cmd.Wait()
		close(done)
	}()
	return waitListening(s.done, s.submission, s.tlsAddr)
}

// waitListening polls until every address accepts a TCP connection, the
// process exits (done closes) or startTimeout passes.
func waitListening(done <-chan struct{}, addrs ...string) error {
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	pending := append([]string(nil), addrs...)
	for {
		var still []string
		for _, a := range pending {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				still = append(still, a)
				continue
			}
			c.Close()
		}
		pending = still
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-done:
			return errors.New("the process exited before listening")
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %v after %v", pending, startTimeout)
		}
	}
}

// kill9 ends the server with SIGKILL and waits for it to be gone.
func (s *sluiceServer) kill9() {
	s.t.Helper()
	s.stopping = true
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		s.t.Fatalf("kill -9: %v", err)
	}
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.t.Fatalf("sluice serve still running %v after SIGKILL", stopTimeout)
	}
	fmt.Fprintf(s.stderr, "--- killed with SIGKILL\n")
}

// restart starts the server again on the same configuration and ports.
func (s *sluiceServer) restart() {
	s.t.Helper()
	fmt.Fprintf(s.stderr, "--- restart\n")
	if err := s.start(); err != nil {
		s.t.Fatalf("sluice serve did not restart: %v", err)
	}
}

// stop ends the server with SIGTERM (SIGKILL after stopTimeout). A server
// that died during the test, or did not exit cleanly on SIGTERM, is an
// error.
func (s *sluiceServer) stop() {
	if s.cmd == nil || s.cmd.Process == nil || s.done == nil {
		return
	}
	select {
	case <-s.done:
		if !s.stopping {
			s.t.Errorf("sluice serve exited during the test: %v", s.err)
		}
		return
	default:
	}
	s.stopping = true
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		if s.err != nil {
			s.t.Errorf("sluice serve exited with %v after SIGTERM, want status 0", s.err)
		}
	case <-time.After(stopTimeout):
		s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("sluice serve did not stop within %v of SIGTERM", stopTimeout)
	}
}

// spooled is one message file of the spool, data_dir/spool/queue/ID.
type spooled struct {
	raw []byte // the whole file
	env struct {
		ID       string    `json:"id"`
		Login    string    `json:"login"`
		From     string    `json:"from"`
		To       []string  `json:"to"`
		ClientIP string    `json:"client_ip"`
		Received time.Time `json:"received"`
		Size     int       `json:"size"`
	}
	msg []byte // the message bytes after the envelope line
}

func spoolDir(dataDir string) string { return filepath.Join(dataDir, "spool", "queue") }

// readSpooled reads and checks the layout of the spool file of id.
func readSpooled(t testing.TB, dataDir, id string) *spooled {
	t.Helper()
	if !idRe.MatchString(id) {
		t.Fatalf("queue id %q is not 16 characters of Crockford base32", id)
	}
	raw, err := os.ReadFile(filepath.Join(spoolDir(dataDir), id))
	if err != nil {
		t.Fatalf("queue id %s reported by the client is not in the spool: %v", id, err)
	}
	sp := &spooled{raw: raw}
	magic, rest, ok := bytes.Cut(raw, []byte("\n"))
	if !ok || string(magic) != "SLUICE-SPOOL 1" {
		t.Fatalf("spool file %s does not start with \"SLUICE-SPOOL 1\\n\": %.60q", id, raw)
	}
	envLine, msg, ok := bytes.Cut(rest, []byte("\n"))
	if !ok {
		t.Fatalf("spool file %s has no envelope line", id)
	}
	if err := json.Unmarshal(envLine, &sp.env); err != nil {
		t.Fatalf("spool file %s: envelope line is not JSON: %v\n%s", id, err, envLine)
	}
	sp.msg = msg
	if sp.env.ID != id {
		t.Errorf("spool file %s: envelope id %q", id, sp.env.ID)
	}
	if sp.env.Size != len(msg) {
		t.Errorf("spool file %s: envelope size %d, message is %d bytes", id, sp.env.Size, len(msg))
	}
	return sp
}

// expectMessage is what a test submitted.
type expectMessage struct {
	login, from string
	to          []string
	subject     string
	body        []string // lines that must appear in the body
}

// checkSpooled asserts that the message id is in the spool with the right
// envelope and with the submitted Subject and body.
func checkSpooled(t testing.TB, dataDir, id string, want expectMessage) *spooled {
	t.Helper()
	sp := readSpooled(t, dataDir, id)
	if sp.env.Login != want.login || sp.env.From != want.from || strings.Join(sp.env.To, ",") != strings.Join(want.to, ",") {
		t.Errorf("spool %s: envelope login=%q from=%q to=%q, want login=%q from=%q to=%q",
			id, sp.env.Login, sp.env.From, sp.env.To, want.login, want.from, want.to)
	}
	if sp.env.ClientIP != "127.0.0.1" {
		t.Errorf("spool %s: client_ip %q, want 127.0.0.1", id, sp.env.ClientIP)
	}
	head, body, ok := bytes.Cut(sp.msg, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("spool %s: message has no blank line after the header:\n%s", id, sp.msg)
	}
	head = append(head[:len(head):len(head)], "\r\n"...) // keep the last field's CRLF
	if !bytes.Contains(head, []byte("\r\nSubject: "+want.subject+"\r\n")) {
		t.Errorf("spool %s: header has no \"Subject: %s\":\n%s", id, want.subject, head)
	}
	if !bytes.HasPrefix(head, []byte("Received: ")) || !bytes.Contains(head, []byte("(authenticated as "+want.login+";")) {
		t.Errorf("spool %s: message does not start with Sluice's Received field for %s:\n%s", id, want.login, head)
	}
	for _, line := range want.body {
		if !bytes.Contains(body, []byte(line+"\r\n")) {
			t.Errorf("spool %s: body has no line %q:\n%s", id, line, body)
		}
	}
	return sp
}

// spoolIDs lists the IDs in the queue directory.
func spoolIDs(t testing.TB, dataDir string) []string {
	t.Helper()
	entries, err := os.ReadDir(spoolDir(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".state") { // delivery state beside the message
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// spooledWithSubject returns the IDs of spooled messages with this subject.
func spooledWithSubject(t testing.TB, dataDir, subject string) []string {
	t.Helper()
	var ids []string
	for _, id := range spoolIDs(t, dataDir) {
		raw, err := os.ReadFile(filepath.Join(spoolDir(dataDir), id))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("\r\nSubject: "+subject+"\r\n")) {
			ids = append(ids, id)
		}
	}
	return ids
}

// queueID finds the one "250 2.0.0 Ok: queued as ID" in a client's output.
func queueID(t testing.TB, output string) string {
	t.Helper()
	m := queuedRe.FindAllStringSubmatch(output, -1)
	if len(m) != 1 {
		t.Fatalf("want exactly one \"250 2.0.0 Ok: queued as ID\" reply, found %d in:\n%s", len(m), output)
	}
	return m[0][1]
}

// swaks runs swaks against addr; mode is "--tls" (STARTTLS) or "--tlsc"
// (implicit TLS); to may list several recipients separated by commas, and
// extra are further swaks options.
func swaks(t testing.TB, addr, mode, mech string, u testUser, from, to, subject, body string, extra ...string) result {
	t.Helper()
	bin := requireTool(t, "swaks", "swaks")
	return runCommand(t, "", cleanEnv(), "", bin, append([]string{
		"--server", addr, mode,
		"--helo", "client.sluice.test",
		"--auth", mech, "--auth-user", u.addr, "--auth-password", u.password,
		"--from", from, "--to", to,
		"--header", "Subject: " + subject,
		"--body", body,
		"--timeout", "20"}, extra...)...)
}

// startSMTPSink starts the next hop of a server in [relay] mode =
// "smarthost" (smarthostTOML): a go-smtp server on a free loopback port
// with STARTTLS (a smarthost must offer it; the certificate is opsCert's),
// whose sessions newSession makes. It is closed when the test ends; the
// caller's own cleanups, registered after this call, run before.
func startSMTPSink(t testing.TB, domain string, newSession func() smtp.Session) (addr string) {
	t.Helper()
	certPEM, keyPEM := opsCert(t, 4242)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return newSession(), nil }))
	srv.Domain = domain
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// smarthostTOML is a [relay] table that delivers everything to the sink at
// addr over STARTTLS and retries a deferred message after retry.
func smarthostTOML(addr, retry string) string {
	return fmt.Sprintf("\n[relay]\nmode = \"smarthost\"\nsmarthost = %q\nsmarthost_insecure_skip_verify = true\nretry_schedule = [%q]\nconnect_timeout = \"5s\"\ncommand_timeout = \"30s\"\n", addr, retry)
}
