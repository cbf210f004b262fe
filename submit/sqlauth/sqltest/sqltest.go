// Package sqltest starts real database servers for tests: PostgreSQL
// (initdb + postgres) and MariaDB (mariadb-install-db + mariadbd), each in
// a temporary directory on a free loopback port, and can stop and restart
// them on the same port to test outages. Executed statements are counted
// on the server side (pg_stat_statements, MariaDB's general log), so a test
// can prove how many queries a login cost.
//
// Both servers refuse to run as root; when the tests run as root (as CI
// does) the server runs as the "postgres" or "mysql" system user the Debian
// package creates (or "nobody"), switched to with the process credentials,
// not with sudo or su.
package sqltest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // driver "mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx"
)

// startTimeout bounds how long a server may take to answer after start.
const startTimeout = 60 * time.Second

// Server is a database server child process.
type Server struct {
	// Driver is the sqlauth driver name: "postgres" or "mysql".
	Driver string
	// Addr is 127.0.0.1:PORT.
	Addr string
	// DSN connects to the test database "panel" (for Sluice's config).
	DSN string

	t       testing.TB
	dir     string
	cred    *syscall.Credential
	argv    []string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	db      *sql.DB
}

// missing fails the test when CI=true (where the package must be
// installed) and skips it otherwise.
func missing(t testing.TB, what, debianPackage string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; on CI it must be: apt-get install %s", what, debianPackage)
	}
	t.Skipf("%s is not installed (apt-get install %s)", what, debianPackage)
}

// find returns the first program of names found in PATH or in dirs.
func find(names []string, dirs ...string) string {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	for _, pattern := range dirs {
		matches, _ := filepath.Glob(pattern)
		sort.Sort(sort.Reverse(sort.StringSlice(matches))) // newest version first
		for _, d := range matches {
			for _, n := range names {
				p := filepath.Join(d, n)
				if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
					return p
				}
			}
		}
	}
	return ""
}

// workDir makes a temporary directory owned by the account the server
// runs as, removed when the test ends.
func workDir(t testing.TB, prefix string, accounts ...string) (string, *syscall.Credential) {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cred := runAs(t, accounts...)
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	return dir, cred
}

// runAs returns the credentials of the first existing account when the
// test runs as root, nil (run as ourselves) otherwise.
func runAs(t testing.TB, accounts ...string) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	for _, name := range append(accounts, "nobody") {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	t.Fatalf("running as root and none of the accounts %v exists to run the server as", accounts)
	return nil
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// run runs a setup command to its end as the server's account.
func run(t testing.TB, cred *syscall.Credential, dir string, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// StartPostgres initialises a cluster (superuser "sluice", trust auth on
// loopback), starts postgres with pg_stat_statements, and creates the
// database "panel".
func StartPostgres(t testing.TB) *Server {
	t.Helper()
	initdb := find([]string{"initdb"}, "/usr/lib/postgresql/*/bin")
	if initdb == "" {
		missing(t, "PostgreSQL (initdb)", "postgresql")
	}
	bin := filepath.Dir(initdb)
	postgres := filepath.Join(bin, "postgres")
	if _, err := os.Stat(postgres); err != nil {
		postgres = find([]string{"postgres"}, "/usr/lib/postgresql/*/bin")
	}
	dir, cred := workDir(t, "sluice-pg-", "postgres")
	data := filepath.Join(dir, "data")
	run(t, cred, dir, initdb, "-D", data, "-U", "sluice", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	s := &Server{Driver: "postgres", t: t, dir: dir, cred: cred, logPath: filepath.Join(dir, "postgres.log")}
	s.Addr = freePort(t)
	_, port, _ := net.SplitHostPort(s.Addr)
	s.argv = []string{postgres, "-D", data, "-p", port,
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + dir,
		"-c", "shared_preload_libraries=pg_stat_statements", "-c", "pg_stat_statements.track=all",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300"}
	t.Cleanup(s.Stop)
	s.Start()
	admin := s.open("postgres://sluice@" + s.Addr + "/postgres?sslmode=disable")
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE panel"); err != nil {
		t.Fatalf("create database: %v", err)
	}
	s.DSN = "postgres://sluice@" + s.Addr + "/panel?sslmode=disable"
	s.db = s.open(s.DSN)
	s.Exec("CREATE EXTENSION pg_stat_statements")
	return s
}

// StartMariaDB initialises a data directory, starts mariadbd without grant
// tables (anyone on loopback is root) and with the general log in a table,
// and creates the database "panel".
func StartMariaDB(t testing.TB) *Server {
	t.Helper()
	mariadbd := find([]string{"mariadbd", "mysqld"}, "/usr/sbin", "/usr/libexec")
	install := find([]string{"mariadb-install-db", "mysql_install_db"})
	if mariadbd == "" || install == "" {
		missing(t, "MariaDB (mariadbd, mariadb-install-db)", "mariadb-server")
	}
	dir, cred := workDir(t, "sluice-mariadb-", "mysql")
	data := filepath.Join(dir, "data")
	run(t, cred, dir, install, "--no-defaults", "--datadir="+data, "--auth-root-authentication-method=normal", "--skip-test-db")
	s := &Server{Driver: "mysql", t: t, dir: dir, cred: cred, logPath: filepath.Join(dir, "mariadbd.log")}
	s.Addr = freePort(t)
	_, port, _ := net.SplitHostPort(s.Addr)
	s.argv = []string{mariadbd, "--no-defaults", "--datadir=" + data, "--port=" + port, "--bind-address=127.0.0.1",
		"--socket=" + filepath.Join(dir, "mysqld.sock"), "--pid-file=" + filepath.Join(dir, "mysqld.pid"),
		"--skip-grant-tables", "--skip-name-resolve", "--skip-log-bin", "--general-log=1", "--log-output=TABLE",
		"--innodb-buffer-pool-size=16M", "--innodb-flush-log-at-trx-commit=0", "--max-connections=300"}
	t.Cleanup(s.Stop)
	s.Start()
	admin := s.open("root@tcp(" + s.Addr + ")/")
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE panel"); err != nil {
		t.Fatalf("create database: %v", err)
	}
	s.DSN = "root@tcp(" + s.Addr + ")/panel"
	s.db = s.open(s.DSN)
	return s
}

func (s *Server) open(dsn string) *sql.DB {
	s.t.Helper()
	driver := map[string]string{"postgres": "pgx", "mysql": "mysql"}[s.Driver]
	db, err := sql.Open(driver, dsn)
	if err != nil {
		s.t.Fatal(err)
	}
	return db
}

// Start starts the server (again) on the same port and data and waits
// until it answers a query.
func (s *Server) Start() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("sqltest: Start while running")
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", s.argv[0], err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(s.done)

	var dsn string
	if s.Driver == "postgres" {
		dsn = "postgres://sluice@" + s.Addr + "/postgres?sslmode=disable&connect_timeout=2"
	} else {
		dsn = "root@tcp(" + s.Addr + ")/?timeout=2s"
	}
	probe := s.open(dsn)
	defer probe.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := probe.PingContext(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.done:
			s.cmd = nil
			s.t.Fatalf("%s exited during start: %v\n%s", filepath.Base(s.argv[0]), cmd.ProcessState, s.Log())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s does not answer after %v: %v\n%s", filepath.Base(s.argv[0]), startTimeout, err, s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop shuts the server down (fast shutdown: open connections are cut)
// and waits until it has exited and its port is closed.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	if s.db != nil {
		s.db.SetMaxIdleConns(0) // drop our pooled connections with it
		s.db.SetMaxIdleConns(2)
	}
	sig := syscall.SIGTERM // mariadbd: normal shutdown
	if s.Driver == "postgres" {
		sig = syscall.SIGINT // postgres: fast shutdown
	}
	s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("%s did not stop within 30s; killed", filepath.Base(s.argv[0]))
	}
	s.cmd = nil
}

// Log returns the server's log output.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// Exec runs statements in the panel database and fails the test on error.
func (s *Server) Exec(query string, args ...any) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.db.ExecContext(ctx, query, args...); err != nil {
		s.t.Fatalf("%s: %v", query, err)
	}
}

// Statements counts the statements executed so far whose text contains
// marker (e.g. a comment /* sluice-pw */ in a query): the calls recorded
// by pg_stat_statements, or the Query and Execute lines of MariaDB's
// general log. The counting query itself is not counted.
func (s *Server) Statements(marker string) int {
	s.t.Helper()
	if strings.ContainsAny(marker, "'%_\\") || len(marker) < 2 {
		s.t.Fatalf("sqltest: marker %q must be plain text", marker)
	}
	// The pattern is assembled by the server, so this query's own text
	// does not contain the marker.
	a, b := marker[:1], marker[1:]
	var q string
	if s.Driver == "postgres" {
		q = fmt.Sprintf(`SELECT COALESCE(SUM(calls), 0) FROM pg_stat_statements WHERE query LIKE '%%' || '%s' || '%s' || '%%'`, a, b)
	} else {
		q = fmt.Sprintf(`SELECT COUNT(*) FROM mysql.general_log WHERE command_type IN ('Query', 'Execute') AND argument LIKE CONCAT('%%', '%s', '%s', '%%')`, a, b)
	}
	var n int
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.db.QueryRowContext(ctx, q).Scan(&n); err != nil {
		s.t.Fatalf("count statements: %v", err)
	}
	return n
}
