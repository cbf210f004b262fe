package main

// TestIdleConnectionMemory measures what an authenticated idle submission
// session costs the "sluice serve" process. It is a measurement, not a
// regular test, and runs only when SLUICE_IDLE_CONNS is set:
//
//	SLUICE_IDLE_CONNS=5000 go test -run TestIdleConnectionMemory -v -timeout 20m ./cmd/sluice
//
// SLUICE_IDLE_SETTLE (a duration, default 15s) is how long to wait after the
// last connection before the second RSS reading, so that the runtime can
// return the argon2id scratch memory of the logins (19 MiB each) to the OS.
//
// The server runs with GODEBUG=gctrace=1 so that the live heap and stack
// sizes of its last garbage collection can be logged next to the RSS.

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	idleUser        = "a@example.test"
	idlePassword    = "idle-memory-secret"
	idleParallelism = 16
)

const idleConfig = `# written by TestIdleConnectionMemory
hostname = "mail.sluice.test"
data_dir = %q

[submission]
listen = [%q]
listen_tls = [%q]
max_connections = 20000
max_connections_per_ip = 20000
idle_timeout = "30m"
`

func TestIdleConnectionMemory(t *testing.T) {
	v := os.Getenv("SLUICE_IDLE_CONNS")
	if v == "" {
		t.Skip("set SLUICE_IDLE_CONNS=N (e.g. 5000) to measure the memory of N idle authenticated connections")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("SLUICE_IDLE_CONNS=%q is not a positive number", v)
	}
	settle := 15 * time.Second
	if s := os.Getenv("SLUICE_IDLE_SETTLE"); s != "" {
		if settle, err = time.ParseDuration(s); err != nil {
			t.Fatalf("SLUICE_IDLE_SETTLE=%q: %v", s, err)
		}
	}
	idleRaiseNofile(t, n)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sluice.toml")
	dataDir := filepath.Join(dir, "data")
	plainAddr, tlsAddr := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(idleConfig, dataDir, plainAddr, tlsAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	if r := runCommand(t, dir, cleanEnv(), idlePassword+"\n", sluiceBin, "user", "add", idleUser, "--password-stdin", "--config", cfgPath); r.exit != 0 {
		t.Fatalf("sluice user add:\n%s", r)
	}

	srv := idleStartServer(t, sluiceBin, dir, cfgPath, plainAddr, tlsAddr)

	time.Sleep(time.Second)
	base := idleProcStatus(t, srv.cmd.Process.Pid)
	t.Logf("baseline: VmRSS %d KB (VmHWM %d KB)", base["VmRSS"], base["VmHWM"])

	// Open n connections, 16 at a time: each costs one argon2id hash.
	conns := make([]*idleConn, n)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.conn.Close()
			}
		}
	})
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for range idleParallelism {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for failed.Load() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := idleOpen(plainAddr)
				if err != nil {
					err = fmt.Errorf("connection %d: %w", i+1, err)
					failed.CompareAndSwap(nil, &err)
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	openTime := time.Since(start)
	if p := failed.Load(); p != nil {
		t.Fatalf("opening %d idle connections: %v\nserver stderr (tail):\n%s", n, *p, srv.tail())
	}

	after := idleProcStatus(t, srv.cmd.Process.Pid)
	perConn := func(rss int64) float64 { return float64(rss-base["VmRSS"]) / float64(n) }
	t.Logf("opened %d authenticated idle connections (EHLO, STARTTLS, EHLO, AUTH PLAIN) in %v (%.0f/s, parallelism %d)",
		n, openTime.Round(time.Millisecond), float64(n)/openTime.Seconds(), idleParallelism)
	t.Logf("right after:      VmRSS %d KB (VmHWM %d KB): +%d KB, %.1f KB per connection",
		after["VmRSS"], after["VmHWM"], after["VmRSS"]-base["VmRSS"], perConn(after["VmRSS"]))
	t.Logf("last GC so far:   %s", srv.lastGC())

	time.Sleep(settle)
	settled := idleProcStatus(t, srv.cmd.Process.Pid)
	t.Logf("after %v settle: VmRSS %d KB: +%d KB, %.1f KB per connection",
		settle, settled["VmRSS"], settled["VmRSS"]-base["VmRSS"], perConn(settled["VmRSS"]))
	t.Logf("last GC:          %s", srv.lastGC())

	// The idle sessions are still there.
	for i := 0; i < n; i += max(1, n/100) {
		if code, text, err := conns[i].cmd("NOOP"); err != nil || code != 250 {
			t.Errorf("idle connection %d no longer answers NOOP: %d %q %v", i+1, code, text, err)
			break
		}
	}

	// A new session still gets its greeting and EHLO answer promptly.
	t0 := time.Now()
	c, err := net.DialTimeout("tcp", plainAddr, 10*time.Second)
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	nc := &idleConn{conn: c, r: bufio.NewReader(c)}
	code, text, err := nc.read()
	greet := time.Since(t0)
	if err != nil || code != 220 {
		t.Fatalf("new session greeting: %d %q %v", code, text, err)
	}
	code, text, err = nc.cmd("EHLO probe.test")
	ehlo := time.Since(t0)
	if err != nil || code != 250 {
		t.Fatalf("new session EHLO: %d %q %v", code, text, err)
	}
	t.Logf("new session with %d idle ones open: greeting after %v, EHLO answered after %v",
		n, greet.Round(time.Microsecond), ehlo.Round(time.Microsecond))
	if ehlo > time.Second {
		t.Errorf("a new session waited %v for greeting and EHLO with %d idle sessions open", ehlo, n)
	}
}

// idleRaiseNofile raises RLIMIT_NOFILE to the hard maximum. Because the
// test calls Setrlimit itself, os/exec leaves the raised limit to the server
// process it starts.
func idleRaiseNofile(t *testing.T, n int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if need := uint64(n) + 200; lim.Cur < need {
		t.Fatalf("RLIMIT_NOFILE hard limit %d is below the %d descriptors %d connections need; raise it (ulimit -Hn) first", lim.Cur, need, n)
	}
	t.Logf("RLIMIT_NOFILE %d (hard %d)", lim.Cur, lim.Max)
}

// idleEnv is cleanEnv with gctrace on, so that the server reports its heap
// at every collection.
func idleEnv() []string {
	var env []string
	for _, kv := range cleanEnv() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	return append(env, "GODEBUG=gctrace=1")
}

type idleServer struct {
	cmd    *exec.Cmd
	stderr string // file the server's stdout and stderr go to
	done   chan struct{}
}

func idleStartServer(t *testing.T, bin, dir, cfgPath string, addrs ...string) *idleServer {
	t.Helper()
	s := &idleServer{stderr: filepath.Join(dir, "serve.log"), done: make(chan struct{})}
	logf, err := os.Create(s.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	s.cmd = exec.Command(bin, "serve", "--config", cfgPath)
	s.cmd.Dir = dir
	s.cmd.Env = idleEnv()
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("server stderr (tail):\n%s", s.tail())
		}
	})
	if err := waitListening(s.done, addrs...); err != nil {
		t.Fatalf("sluice serve: %v\n%s", err, s.tail())
	}
	return s
}

func (s *idleServer) tail() string {
	b, _ := os.ReadFile(s.stderr)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

var idleGCLine = regexp.MustCompile(`(?m)^gc \d+ @.*$`)

// lastGC returns the server's last gctrace line: "A->B->C MB" is the heap at
// the start and end of that collection and the live heap after it.
func (s *idleServer) lastGC() string {
	b, _ := os.ReadFile(s.stderr)
	all := idleGCLine.FindAll(b, -1)
	if len(all) == 0 {
		return "(no collection yet)"
	}
	line := string(all[len(all)-1])
	if i := strings.Index(line, "ms cpu, "); i >= 0 {
		line = line[:strings.Index(line, ":")] + ": " + line[i+len("ms cpu, "):]
	}
	return line
}

// idleProcStatus returns the kB fields of /proc/PID/status.
func idleProcStatus(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.HasSuffix(v, " kB") {
			continue
		}
		if x, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, " kB")), 10, 64); err == nil {
			m[k] = x
		}
	}
	if _, ok := m["VmRSS"]; !ok {
		t.Fatalf("no VmRSS in /proc/%d/status", pid)
	}
	return m
}

// idleConn is a bare SMTP client connection.
type idleConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func (c *idleConn) read() (int, string, error) {
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 0, strings.Join(lines, "\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, line, fmt.Errorf("short reply %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, line, fmt.Errorf("bad reply %q", line)
		}
		lines = append(lines, line)
		if len(line) == 3 || line[3] == ' ' {
			return code, strings.Join(lines, "\n"), nil
		}
	}
}

func (c *idleConn) cmd(line string) (int, string, error) {
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		return 0, "", err
	}
	return c.read()
}

func (c *idleConn) expect(line string, want int) error {
	code, text, err := c.cmd(line)
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Fields(line)[0], err)
	}
	if code != want {
		return fmt.Errorf("%s: %q", strings.Fields(line)[0], text)
	}
	return nil
}

// idleOpen opens one session and leaves it idle after a successful AUTH.
func idleOpen(addr string) (*idleConn, error) {
	raw, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	raw.SetDeadline(time.Now().Add(60 * time.Second))
	c := &idleConn{conn: raw, r: bufio.NewReader(raw)}
	ok := false
	defer func() {
		if !ok {
			c.conn.Close()
		}
	}()
	if code, text, err := c.read(); err != nil || code != 220 {
		return nil, fmt.Errorf("greeting: %d %q %v", code, text, err)
	}
	if err := c.expect("EHLO idle.test", 250); err != nil {
		return nil, err
	}
	if err := c.expect("STARTTLS", 220); err != nil {
		return nil, err
	}
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "mail.sluice.test"})
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	if err := c.expect("EHLO idle.test", 250); err != nil {
		return nil, err
	}
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + idleUser + "\x00" + idlePassword))
	if err := c.expect("AUTH PLAIN "+ir, 235); err != nil {
		return nil, err
	}
	c.conn.SetDeadline(time.Time{})
	ok = true
	return c, nil
}
