// Package redistest starts a real redis-server on a free loopback port for
// tests, and can stop and restart it on the same port to test outages.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Server is a redis-server child process.
type Server struct {
	t    testing.TB
	Addr string
	dir  string
	cmd  *exec.Cmd
	info *bufio.ReadWriter // the connection Info asks on (nil: none yet)
	ic   net.Conn
}

// Start runs redis-server on a free port. When the binary is missing the
// test fails under CI=true and is skipped otherwise.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server not found: install the redis-server package")
		}
		t.Skip("redis-server not installed (apt-get install redis-server)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{t: t, Addr: addr, dir: t.TempDir()}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// SocketURL is the unix:// URL of the server's Unix socket.
func (s *Server) SocketURL() string { return "unix://" + s.socket() + "?db=0" }

func (s *Server) socket() string { return filepath.Join(s.dir, "redis.sock") }

// Stop kills the server (no persistence: its data is gone).
func (s *Server) Stop() {
	if s.ic != nil {
		s.ic.Close()
		s.ic, s.info = nil, nil
	}
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Restart starts the server (again) on the same port and waits until it
// answers PING.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log")}
	if len(s.socket()) < 100 { // sun_path holds 108 bytes
		args = append(args, "--unixsocket", s.socket(), "--unixsocketperm", "700")
	}
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := s.ping(); err == nil {
			return
		} else if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server did not answer: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) ping() error {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "PING\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Info returns redis-server's own counters: the numeric fields of INFO
// stats, and for each command its calls (as "cmdstat_NAME"). It asks on a
// connection of its own, kept open, so that each call reads alike.
func (s *Server) Info(t testing.TB) map[string]int64 {
	t.Helper()
	if s.info == nil {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err != nil {
			t.Fatalf("redis INFO: %v", err)
		}
		s.ic, s.info = c, bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	}
	s.ic.SetDeadline(time.Now().Add(5 * time.Second))
	s.info.WriteString("*3\r\n$4\r\nINFO\r\n$5\r\nstats\r\n$12\r\ncommandstats\r\n")
	if err := s.info.Flush(); err != nil {
		t.Fatalf("redis INFO: %v", err)
	}
	head, err := s.info.ReadString('\n')
	var n int
	if err == nil {
		_, err = fmt.Sscanf(head, "$%d", &n)
	}
	if err != nil {
		t.Fatalf("redis INFO answered %q: %v", head, err)
	}
	body := make([]byte, n+2)
	if _, err := io.ReadFull(s.info, body); err != nil {
		t.Fatalf("redis INFO: %v", err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(body), "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if strings.HasPrefix(k, "cmdstat_") {
			v, _, _ = strings.Cut(strings.TrimPrefix(v, "calls="), ",")
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

// RoundTrips runs f and returns how many requests redis-server read from
// its clients meanwhile (total_reads_processed, less the INFO that reads
// it) and how many times each command ran. A client that connects during
// f (HELLO) fails the test: warm its pool first.
func (s *Server) RoundTrips(t testing.TB, f func()) (trips int64, calls map[string]int64) {
	t.Helper()
	a := s.Info(t)
	b := s.Info(t)
	f()
	d := s.Info(t)
	perInfo := b["total_reads_processed"] - a["total_reads_processed"]
	calls = map[string]int64{}
	for k, v := range d {
		if name, ok := strings.CutPrefix(k, "cmdstat_"); ok && name != "info" && v != b[k] {
			calls[name] = v - b[k]
		}
	}
	if calls["hello"] != 0 {
		t.Fatalf("a client opened a connection during the measure (%v): warm its pool first", calls)
	}
	return d["total_reads_processed"] - b["total_reads_processed"] - perInfo, calls
}
