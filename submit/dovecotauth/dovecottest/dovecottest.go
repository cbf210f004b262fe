// Package dovecottest starts a real Dovecot (dovecot-core) for tests: its
// own configuration, base_dir, state and log in a temporary directory, a
// passwd-file passdb with hashes made by `doveadm pw`, and the auth
// service listening on a unix socket (auth-client) and on a free loopback
// TCP port. No mail protocol is started. It can be stopped and started
// again to test an outage.
//
// As root (CI) Dovecot drops its auth processes to the dovecot and
// dovenull accounts the Debian package creates; otherwise every process
// runs as the invoking user.
package dovecottest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const startTimeout = 30 * time.Second

// User is one line of the passwd-file.
type User struct {
	Name     string // the login, e.g. alice@example.test
	Password string
	Scheme   string // doveadm pw scheme; default SHA512-CRYPT
	Extra    string // extra fields, e.g. "nologin reason=closed"
}

// Server is a running dovecot master process.
type Server struct {
	Socket string // unix path of the auth-client listener
	Addr   string // 127.0.0.1:PORT of the auth inet_listener

	t       testing.TB
	dir     string
	conf    string
	dovecot string
	cmd     *exec.Cmd
	done    chan struct{}
}

// missing fails the test when CI=true and skips it otherwise.
func missing(t testing.TB, what, debianPackage string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; on CI it must be: apt-get install %s", what, debianPackage)
	}
	t.Skipf("%s is not installed (apt-get install %s)", what, debianPackage)
}

func lookPath(names ...string) string {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
		if p := filepath.Join("/usr/sbin", n); fileExists(p) {
			return p
		}
	}
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

const configTemplate = `# written by dovecottest
base_dir = {{dir}}/run
state_dir = {{dir}}/state
log_path = {{dir}}/dovecot.log
protocols = none
listen = 127.0.0.1
ssl = no
# Sluice sends PLAIN over its own TLS session.
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_cache_size = 0
default_internal_user = {{internal}}
default_internal_group = {{group}}
default_login_user = {{login}}
passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%Lu {{dir}}/passwd
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}
service auth {
  unix_listener auth-client {
    mode = 0666
  }
  inet_listener {
    address = 127.0.0.1
    port = {{port}}
  }
}
`

// Start writes the configuration and the passwd-file of users and starts
// Dovecot; it is stopped when the test ends.
func Start(t testing.TB, users ...User) *Server {
	t.Helper()
	dovecot := lookPath("dovecot")
	doveadm := lookPath("doveadm")
	if dovecot == "" || doveadm == "" {
		missing(t, "Dovecot (dovecot, doveadm)", "dovecot-core")
	}
	dir, err := os.MkdirTemp("", "sluice-dovecot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The auth processes run as another account and read the passwd-file.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	internal, group, login := "dovecot", "dovecot", "dovenull"
	if os.Geteuid() != 0 {
		me, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		g, err := user.LookupGroupId(me.Gid)
		if err != nil {
			t.Fatal(err)
		}
		internal, group, login = me.Username, g.Name, me.Username
	} else {
		for _, a := range []string{internal, login} {
			if _, err := user.Lookup(a); err != nil {
				missing(t, "the "+a+" account", "dovecot-core")
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, dir: dir, dovecot: dovecot, Addr: l.Addr().String(), conf: filepath.Join(dir, "dovecot.conf")}
	l.Close()
	_, port, _ := net.SplitHostPort(s.Addr)
	s.Socket = filepath.Join(dir, "run", "auth-client")
	conf := strings.NewReplacer("{{dir}}", dir, "{{internal}}", internal, "{{group}}", group, "{{login}}", login, "{{port}}", port).Replace(configTemplate)
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	var passwd strings.Builder
	for _, u := range users {
		scheme := u.Scheme
		if scheme == "" {
			scheme = "SHA512-CRYPT"
		}
		out, err := exec.Command(doveadm, "-c", s.conf, "pw", "-s", scheme, "-p", u.Password).CombinedOutput()
		if err != nil {
			t.Fatalf("doveadm pw -s %s: %v\n%s", scheme, err, out)
		}
		hash := strings.TrimSpace(string(out))
		fmt.Fprintf(&passwd, "%s:%s::::::%s\n", u.Name, hash, u.Extra)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(passwd.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	s.Start()
	return s
}

// Start starts Dovecot (again) and waits until both listeners complete
// the auth handshake.
func (s *Server) Start() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("dovecottest: Start while running")
	}
	cmd := exec.Command(s.dovecot, "-F", "-c", s.conf)
	out, err := os.OpenFile(filepath.Join(s.dir, "dovecot.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start dovecot: %v", err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(s.done)
	deadline := time.Now().Add(startTimeout)
	for {
		err := handshake("unix", s.Socket)
		if err == nil {
			err = handshake("tcp", s.Addr)
		}
		if err == nil {
			return
		}
		select {
		case <-s.done:
			s.cmd = nil
			s.t.Fatalf("dovecot exited during start: %v\n%s", cmd.ProcessState, s.Log())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("dovecot auth does not answer after %v: %v\n%s", startTimeout, err, s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// handshake connects and reads the server's handshake up to DONE.
func handshake(network, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(c, "VERSION\t1\t2\nCPID\t%d\n", os.Getpid()); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if line == "DONE\n" {
			return nil
		}
	}
}

// Stop ends Dovecot (SIGTERM to the master) and waits until it has exited.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("dovecot did not stop within 30s; killed")
	}
	s.cmd = nil
}

// Log returns Dovecot's log and output.
func (s *Server) Log() string {
	a, _ := os.ReadFile(filepath.Join(s.dir, "dovecot.out"))
	b, _ := os.ReadFile(filepath.Join(s.dir, "dovecot.log"))
	return string(a) + string(b)
}
