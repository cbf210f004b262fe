package submit_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/relay/spool"
	"sluice/submit"
	"sluice/submit/userdb"
)

const testPassword = "correct horse battery"

// gateway is a real submission server on loopback ports with a real spool
// and a real user file in a temporary directory.
type gateway struct {
	srv      *submit.Server
	spool    *spool.Spool
	users    *userdb.File
	plain    string // STARTTLS listener
	implicit string // implicit TLS listener
	logs     *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type gatewayOption func(*submit.Server)

func startGateway(t testing.TB, opts ...gatewayOption) *gateway {
	t.Helper()
	dir := t.TempDir()
	sp, err := spool.Open(filepath.Join(dir, "spool"))
	if err != nil {
		t.Fatal(err)
	}
	users, err := userdb.Open(filepath.Join(dir, "users.json"))
	if err != nil {
		t.Fatal(err)
	}
	addUser(t, users, "info@example.test", testPassword, []string{"@example.test", "billing@other.test"}, false)
	addUser(t, users, "off@example.test", testPassword, nil, true)
	logs := &syncBuffer{}
	srv := &submit.Server{
		Hostname:  "mx.sluice.test",
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{testCert(t)}},
		Auth:      users,
		Spool:     sp,
		Logger:    slog.New(slog.NewTextHandler(logs, nil)),
		Limits:    submit.DefaultLimits,
	}
	srv.Limits.MaxMessageSize = 64 << 10
	srv.Limits.MaxRecipients = 5
	for _, o := range opts {
		o(srv)
	}
	g := &gateway{srv: srv, spool: sp, users: users, logs: logs}
	for _, implicit := range []bool{false, true} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if implicit {
			g.implicit = l.Addr().String()
		} else {
			g.plain = l.Addr().String()
		}
		go srv.Serve(l, implicit)
	}
	t.Cleanup(func() {
		srv.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return g
}

func addUser(t testing.TB, db *userdb.File, addr, pw string, grants []string, disabled bool) {
	t.Helper()
	h, err := userdb.HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(m map[string]*userdb.User) error {
		m[addr] = &userdb.User{Address: addr, Hash: h, Grants: grants, Disabled: disabled}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

var (
	certOnce sync.Once
	certPair tls.Certificate
)

func testCert(t testing.TB) tls.Certificate {
	certOnce.Do(func() {
		certPair = mustSelfSigned()
	})
	return certPair
}

// client is a minimal SMTP client that shows every reply as it came, so the
// tests can assert codes and enhanced codes exactly.
type client struct {
	t        testing.TB
	conn     net.Conn
	r        *bufio.Reader
	greeting response
}

type response struct {
	code     int
	enhanced string
	text     string // all lines joined by "\n"
}

func (r response) String() string { return fmt.Sprintf("%d %s %s", r.code, r.enhanced, r.text) }

func dial(t testing.TB, addr string, implicitTLS bool) *client {
	t.Helper()
	var c net.Conn
	var err error
	if implicitTLS {
		c, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	cl := &client{t: t, conn: c, r: bufio.NewReader(c)}
	t.Cleanup(func() { c.Close() })
	if cl.greeting = cl.read(); cl.greeting.code != 220 {
		t.Fatalf("greeting: %v", cl.greeting)
	}
	return cl
}

func (c *client) read() response {
	c.t.Helper()
	var lines []string
	var code int
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			if len(lines) == 0 {
				return response{code: -1, text: "connection closed: " + err.Error()}
			}
			break
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			c.t.Fatalf("short reply line %q", line)
		}
		code, _ = strconv.Atoi(line[:3])
		lines = append(lines, line[min(4, len(line)):])
		if len(line) == 3 || line[3] == ' ' {
			break
		}
	}
	resp := response{code: code, text: strings.Join(lines, "\n")}
	last := lines[len(lines)-1]
	if f := strings.Fields(last); len(f) > 0 && strings.Count(f[0], ".") == 2 && f[0][0] >= '2' && f[0][0] <= '5' {
		resp.enhanced = f[0]
	}
	return resp
}

func (c *client) cmd(format string, a ...any) response {
	c.t.Helper()
	fmt.Fprintf(c.conn, format+"\r\n", a...)
	return c.read()
}

func (c *client) raw(s string) { io.WriteString(c.conn, s) }

func (c *client) starttls() {
	c.t.Helper()
	if r := c.cmd("STARTTLS"); r.code != 220 {
		c.t.Fatalf("STARTTLS: %v", r)
	}
	if err := c.upgrade(nil); err != nil {
		c.t.Fatal(err)
	}
}

// upgrade runs the TLS handshake after a 220 reply to STARTTLS (cfg nil:
// any certificate, default versions).
func (c *client) upgrade(cfg *tls.Config) error {
	if cfg == nil {
		cfg = &tls.Config{InsecureSkipVerify: true}
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
	return nil
}

func plainIR(authzid, user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(authzid + "\x00" + user + "\x00" + pass))
}

// login opens a STARTTLS session and authenticates as user.
func (g *gateway) login(t testing.TB, user string) *client {
	t.Helper()
	c := dial(t, g.plain, false)
	c.cmd("EHLO client.test")
	c.starttls()
	c.cmd("EHLO client.test")
	if r := c.cmd("AUTH PLAIN %s", plainIR("", user, testPassword)); r.code != 235 {
		t.Fatalf("AUTH: %v", r)
	}
	return c
}

// send runs one transaction and returns the reply to the end of DATA.
func (c *client) send(from string, to []string, msg string) response {
	c.t.Helper()
	if r := c.cmd("MAIL FROM:<%s>", from); r.code != 250 {
		return r
	}
	for _, rc := range to {
		if r := c.cmd("RCPT TO:<%s>", rc); r.code != 250 {
			return r
		}
	}
	if r := c.cmd("DATA"); r.code != 354 {
		return r
	}
	c.raw(msg)
	c.raw(".\r\n")
	return c.read()
}

func simpleMessage(from, to, subject string) string {
	return "From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\n\r\nHello.\r\n"
}

func queued(g *gateway, t testing.TB) []string {
	ids, err := g.spool.List()
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func init() { os.Setenv("TZ", "UTC") }

// dialRaw connects without reading the greeting.
func dialRaw(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c, r: bufio.NewReader(c)}
}

// eachOnStoreError runs f as a subtest for each on_store_error mode:
// "tempfail" (allow false) and "allow".
func eachOnStoreError(t *testing.T, f func(t *testing.T, allow bool)) {
	for _, allow := range []bool{false, true} {
		name := "tempfail"
		if allow {
			name = "allow"
		}
		t.Run(name, func(t *testing.T) { f(t, allow) })
	}
}

// wantStoreTempfail fails t unless r is 451 4.3.0 naming neither Redis
// nor its address redisAddr.
func wantStoreTempfail(t testing.TB, r response, redisAddr string) {
	t.Helper()
	if r.code != 451 || r.enhanced != "4.3.0" || strings.Contains(r.text, "redis") || strings.Contains(r.text, redisAddr) {
		t.Fatalf("store down, tempfail: %v, want 451 4.3.0 without internals", r)
	}
}
