package main

// Operations tests: what an operator sees and does with a running "sluice
// serve": the Prometheus metrics and health endpoints, reloading with
// SIGHUP, stopping with SIGTERM under load, and the mail-client
// autoconfiguration documents. Like the other integration tests they run
// the real binary (harness_test.go) and talk to it over the network.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"sluice/screen/redistest"
)

// opsTimeout bounds every wait for something the server does on its own
// (a reload, a delivery, a health state).
const opsTimeout = 30 * time.Second

// ---------------------------------------------------------------- waiting

// opsWait polls cond until it reports true or timeout passes. state is what
// the failure message shows of the last poll.
func opsWait(t testing.TB, timeout time.Duration, what string, cond func() (ok bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not the case after %v; last state: %s", what, timeout, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// opsSignal sends sig to the server process.
func opsSignal(t testing.TB, s *sluiceServer, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// Log lines of serve.go/reload.go the reload tests wait for.
const (
	opsReloadedLog = "reloaded: users, DKIM keys, TLS certificate"
	opsRefusedLog  = "reload refused: the new configuration is invalid"
)

// opsReload sends SIGHUP and waits until the server logs that it reloaded.
func opsReload(t testing.TB, s *sluiceServer) {
	t.Helper()
	ok, bad := strings.Count(s.stderr.String(), opsReloadedLog), strings.Count(s.stderr.String(), opsRefusedLog)
	opsSignal(t, s, syscall.SIGHUP)
	opsWait(t, opsTimeout, "reload logged after SIGHUP", func() (bool, string) {
		out := s.stderr.String()
		if strings.Count(out, opsRefusedLog) > bad {
			t.Fatalf("SIGHUP: the server refused a configuration the test meant to be valid:\n%s", out)
		}
		return strings.Count(out, opsReloadedLog) > ok, fmt.Sprintf("%d reload lines", strings.Count(out, opsReloadedLog))
	})
}

// opsReloadRefused sends SIGHUP with an invalid configuration in place and
// returns the refusal's log line.
func opsReloadRefused(t testing.TB, s *sluiceServer) string {
	t.Helper()
	ok, bad := strings.Count(s.stderr.String(), opsReloadedLog), strings.Count(s.stderr.String(), opsRefusedLog)
	opsSignal(t, s, syscall.SIGHUP)
	opsWait(t, opsTimeout, "reload refusal logged after SIGHUP", func() (bool, string) {
		out := s.stderr.String()
		if strings.Count(out, opsReloadedLog) > ok {
			t.Fatalf("SIGHUP with an invalid configuration: the server reloaded it:\n%s", out)
		}
		return strings.Count(out, opsRefusedLog) > bad, "no refusal yet"
	})
	lines := strings.Split(s.stderr.String(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], opsRefusedLog) {
			return lines[i]
		}
	}
	return ""
}

// opsEditConfig replaces the one occurrence of old in the server's
// configuration file.
func opsEditConfig(t testing.TB, s *sluiceServer, old, new string) {
	t.Helper()
	b, err := os.ReadFile(s.configPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), old); n != 1 {
		t.Fatalf("config %s: %q occurs %d times, want once:\n%s", s.configPath, old, n, b)
	}
	opsWriteFile(t, s.configPath, []byte(strings.Replace(string(b), old, new, 1)), 0o600)
}

// opsWriteFile replaces a file atomically, the way deployment tools do.
func opsWriteFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------- HTTP

var opsHTTP = &http.Client{Timeout: 10 * time.Second}

// opsFetch does one request; err is set only when no response came.
func opsFetch(method, url, contentType, body string) (int, http.Header, string, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, "", err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := opsHTTP.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), err
}

// opsGet fetches url and fails the test unless the status is want.
func opsGet(t testing.TB, url string, want int) (http.Header, string) {
	t.Helper()
	code, h, body, err := opsFetch(http.MethodGet, url, "", "")
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if code != want {
		t.Fatalf("GET %s: status %d, want %d\n%s", url, code, want, body)
	}
	return h, body
}

// opsWaitStatus polls url until it answers want (the HTTP listener starts
// a moment after the SMTP ports the harness waits for).
func opsWaitStatus(t testing.TB, url string, want int) string {
	t.Helper()
	var body string
	opsWait(t, opsTimeout, "GET "+url+" answers "+strconv.Itoa(want), func() (bool, string) {
		code, _, b, err := opsFetch(http.MethodGet, url, "", "")
		body = b
		if err != nil {
			return false, err.Error()
		}
		return code == want, fmt.Sprintf("status %d: %s", code, strings.TrimSpace(b))
	})
	return body
}

// ---------------------------------------------------------------- metrics

type opsMetrics map[string]*dto.MetricFamily

// opsScrape fetches /metrics and parses it with Prometheus' own parser.
func opsScrape(t testing.TB, base string) opsMetrics {
	t.Helper()
	resp, err := opsHTTP.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: status %d\n%s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics: Content-Type %q, want the text exposition format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not valid Prometheus text format: %v", err)
	}
	return fams
}

// value is the sample of name with exactly these labels (pairs of name and
// value); 0 when the series does not exist yet (a counter never touched).
func (m opsMetrics) value(name string, labels ...string) float64 {
	f := m[name]
	if f == nil {
		return 0
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, mt := range f.Metric {
		if len(mt.Label) != len(want) {
			continue
		}
		for _, l := range mt.Label {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		switch {
		case mt.Counter != nil:
			return mt.Counter.GetValue()
		case mt.Gauge != nil:
			return mt.Gauge.GetValue()
		case mt.Untyped != nil:
			return mt.Untyped.GetValue()
		}
	}
	return 0
}

// series lists every sample of a counter or gauge family as
// "label=value,... -> sample", for comparing before and after.
func (m opsMetrics) series(name string) map[string]float64 {
	out := map[string]float64{}
	f := m[name]
	if f == nil {
		return out
	}
	for _, mt := range f.Metric {
		var ls []string
		for _, l := range mt.Label {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(ls)
		v := 0.0
		switch {
		case mt.Counter != nil:
			v = mt.Counter.GetValue()
		case mt.Gauge != nil:
			v = mt.Gauge.GetValue()
		}
		out[strings.Join(ls, ",")] = v
	}
	return out
}

// ---------------------------------------------------------------- SMTP client

// opsConn is a raw SMTP client that returns errors instead of failing the
// test, so that it can run in goroutines and across a server shutdown.
type opsConn struct {
	conn  net.Conn
	tp    *textproto.Conn
	state tls.ConnectionState
}

// opsReply is the reply that ended a command sequence.
type opsReply struct {
	stage string // "MAIL", "RCPT", "DATA" or "message"
	code  int
	text  string // enhanced code and text, as textproto returns it
}

func (r opsReply) String() string { return fmt.Sprintf("%s: %d %s", r.stage, r.code, r.text) }

// queued returns the queue ID of a "250 2.0.0 Ok: queued as ID" reply.
func (r opsReply) queued() (string, bool) {
	if r.stage != "message" || r.code != 250 {
		return "", false
	}
	m := queuedRe.FindStringSubmatch(fmt.Sprintf("%d %s", r.code, r.text))
	if m == nil {
		return "", false
	}
	return m[1], true
}

// opsDial connects, says EHLO and starts TLS: implicitly (the submissions
// listener) or with STARTTLS.
func opsDial(addr string, implicit bool) (*opsConn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "mail.sluice.test"}
	var raw net.Conn
	var err error
	if implicit {
		raw, err = tls.DialWithDialer(d, "tcp", addr, cfg)
	} else {
		raw, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	c := &opsConn{conn: raw, tp: textproto.NewConn(raw)}
	fail := func(err error) (*opsConn, error) {
		raw.Close()
		return nil, err
	}
	c.conn.SetDeadline(time.Now().Add(commandTimeout))
	if code, text, err := c.tp.ReadResponse(0); err != nil || code != 220 {
		return fail(fmt.Errorf("greeting: %d %s %v", code, text, err))
	}
	if err := c.want(250, "EHLO client.sluice.test"); err != nil {
		return fail(err)
	}
	if implicit {
		c.state = raw.(*tls.Conn).ConnectionState()
		return c, nil
	}
	if err := c.want(220, "STARTTLS"); err != nil {
		return fail(err)
	}
	tc := tls.Client(raw, cfg)
	if err := tc.Handshake(); err != nil {
		return fail(fmt.Errorf("TLS handshake after STARTTLS: %w", err))
	}
	c.conn, c.tp, c.state = tc, textproto.NewConn(tc), tc.ConnectionState()
	if err := c.want(250, "EHLO client.sluice.test"); err != nil {
		return fail(err)
	}
	return c, nil
}

// cmd sends one line and reads the reply.
func (c *opsConn) cmd(format string, args ...any) (int, string, error) {
	c.conn.SetDeadline(time.Now().Add(commandTimeout))
	if err := c.tp.PrintfLine(format, args...); err != nil {
		return 0, "", err
	}
	return c.tp.ReadResponse(0)
}

func (c *opsConn) want(code int, format string, args ...any) error {
	got, text, err := c.cmd(format, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Fields(fmt.Sprintf(format, args...))[0], err)
	}
	if got != code {
		return fmt.Errorf("%s: %d %s, want %d", strings.Fields(fmt.Sprintf(format, args...))[0], got, text, code)
	}
	return nil
}

// auth tries AUTH PLAIN with an initial response.
func (c *opsConn) auth(user, pass string) (int, string, error) {
	return c.cmd("AUTH PLAIN %s", plainIR(user, pass))
}

// send runs one transaction and returns the reply that ended it: the first
// refusal, or the reply to the message.
func (c *opsConn) send(from, to string, msg []byte) (opsReply, error) {
	code, text, err := c.cmd("MAIL FROM:<%s>", from)
	if err != nil || code != 250 {
		return opsReply{"MAIL", code, text}, err
	}
	if code, text, err = c.cmd("RCPT TO:<%s>", to); err != nil || code != 250 {
		c.cmd("RSET")
		return opsReply{"RCPT", code, text}, err
	}
	if code, text, err = c.cmd("DATA"); err != nil || code != 354 {
		return opsReply{"DATA", code, text}, err
	}
	w := c.tp.DotWriter()
	if _, err := w.Write(msg); err != nil {
		return opsReply{stage: "message"}, err
	}
	if err := w.Close(); err != nil {
		return opsReply{stage: "message"}, err
	}
	code, text, err = c.tp.ReadResponse(0)
	return opsReply{"message", code, text}, err
}

func (c *opsConn) quit() {
	c.cmd("QUIT")
	c.conn.Close()
}

// opsSendOne submits one message on a connection of its own.
func opsSendOne(addr string, implicit bool, u testUser, to string, msg []byte) (opsReply, error) {
	c, err := opsDial(addr, implicit)
	if err != nil {
		return opsReply{}, err
	}
	defer c.quit()
	if code, text, err := c.auth(u.addr, u.password); err != nil || code != 235 {
		return opsReply{"AUTH", code, text}, err
	}
	return c.send(u.addr, to, msg)
}

// opsMustQueue submits msg and returns its queue ID, failing otherwise.
func opsMustQueue(t testing.TB, addr string, implicit bool, u testUser, to string, msg []byte) string {
	t.Helper()
	r, err := opsSendOne(addr, implicit, u, to, msg)
	id, ok := r.queued()
	if err != nil || !ok {
		t.Fatalf("submitting to %s: %v (err %v), want 250 queued", addr, r, err)
	}
	return id
}

// opsLetters spells n in letters: the repeat rule ignores digits when it
// compares messages, so the tests tell their messages apart with letters.
func opsLetters(n int) string {
	b := []byte("aaaa")
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = 'a' + byte(n%26)
		n /= 26
	}
	return string(b)
}

// opsMessage is a small well-formed message carrying tag in its
// X-Ops-Tag field, subject and body.
func opsMessage(from, to, tag string) []byte {
	return []byte("From: <" + from + ">\r\nTo: <" + to + ">\r\nSubject: ops " + tag +
		"\r\nX-Ops-Tag: " + tag + "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nthis is message " +
		tag + "\r\n")
}

var opsTagRe = regexp.MustCompile(`(?m)^X-Ops-Tag: (\S+)\r?$`)

// ---------------------------------------------------------------- certificates

// opsCert makes a self-signed certificate for mail.sluice.test with the
// given serial number and returns it and its key in PEM.
func opsCert(t testing.TB, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "mail.sluice.test", Organization: []string{"ops test " + strconv.FormatInt(serial, 10)}},
		DNSNames:     []string{"mail.sluice.test", "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// opsPeerSerial is the serial number of the certificate a new TLS
// connection to addr is shown.
func opsPeerSerial(t testing.TB, addr string, implicit bool) int64 {
	t.Helper()
	c, err := opsDial(addr, implicit)
	if err != nil {
		t.Fatalf("TLS connection to %s: %v", addr, err)
	}
	defer c.quit()
	if len(c.state.PeerCertificates) == 0 {
		t.Fatalf("%s showed no certificate", addr)
	}
	return c.state.PeerCertificates[0].SerialNumber.Int64()
}

// ---------------------------------------------------------------- relay sink

// opsSink is the next hop for [relay] mode = "smarthost": a go-smtp server
// with STARTTLS (a smarthost must offer it) that records what Sluice
// delivers, by the queue ID in Sluice's Received field. While closed it
// answers MAIL with 451, so messages stay deferred in the spool.
type opsSink struct {
	addr string

	mu       sync.Mutex
	open     bool
	byID     map[string]int    // queue ID -> deliveries
	tagOf    map[string]string // queue ID -> X-Ops-Tag
	noID     int               // messages without a Sluice Received field
	deferred int               // MAIL commands answered 451
}

var opsReceivedIDRe = regexp.MustCompile(`\(Sluice\) with [A-Z]+ id ([0-9A-HJKMNP-TV-Z]{16})`)

func opsStartSink(t testing.TB, open bool) *opsSink {
	t.Helper()
	certPEM, keyPEM := opsCert(t, 4242)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	k := &opsSink{open: open, byID: map[string]int{}, tagOf: map[string]string{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &opsSinkSession{k: k}, nil }))
	srv.Domain = "sink.sluice.test"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k.addr = l.Addr().String()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return k
}

func (k *opsSink) setOpen(open bool) {
	k.mu.Lock()
	k.open = open
	k.mu.Unlock()
}

// snapshot copies the deliveries so far.
func (k *opsSink) snapshot() (byID map[string]int, tagOf map[string]string, noID int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	byID, tagOf = map[string]int{}, map[string]string{}
	for id, n := range k.byID {
		byID[id] = n
	}
	for id, tag := range k.tagOf {
		tagOf[id] = tag
	}
	return byID, tagOf, k.noID
}

// relayTOML is a [relay] table that delivers everything to the sink and
// retries a deferred message after about a second.
func (k *opsSink) relayTOML() string {
	return fmt.Sprintf("\n[relay]\nmode = \"smarthost\"\nsmarthost = %q\nsmarthost_insecure_skip_verify = true\nretry_schedule = [\"1s\"]\nconnect_timeout = \"5s\"\ncommand_timeout = \"30s\"\n", k.addr)
}

type opsSinkSession struct{ k *opsSink }

func (s *opsSinkSession) Reset()        {}
func (s *opsSinkSession) Logout() error { return nil }
func (s *opsSinkSession) Mail(string, *smtp.MailOptions) error {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if !s.k.open {
		s.k.deferred++
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "sink not accepting mail yet"}
	}
	return nil
}
func (s *opsSinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *opsSinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	m := opsReceivedIDRe.FindSubmatch(b)
	if m == nil {
		s.k.noID++
		return nil
	}
	id := string(m[1])
	s.k.byID[id]++
	if tm := opsTagRe.FindSubmatch(b); tm != nil {
		s.k.tagOf[id] = string(tm[1])
	}
	return nil
}

// opsWaitDelivered waits until the sink has every ID of want (ID -> tag)
// and the spools are empty, then checks each came exactly once, with its
// tag, and that nothing else came.
func opsWaitDelivered(t testing.TB, k *opsSink, want map[string]string, servers ...*sluiceServer) {
	t.Helper()
	opsWait(t, opsTimeout, "every acknowledged message delivered to the sink and every spool empty", func() (bool, string) {
		byID, _, _ := k.snapshot()
		missing := 0
		for id := range want {
			if byID[id] == 0 {
				missing++
			}
		}
		left := 0
		for _, s := range servers {
			left += len(spoolIDs(t, s.dataDir))
		}
		return missing == 0 && left == 0, fmt.Sprintf("%d of %d not delivered, %d still spooled", missing, len(want), left)
	})
	byID, tagOf, noID := k.snapshot()
	for id, tag := range want {
		if byID[id] != 1 {
			t.Errorf("message %s (%s) reached the sink %d times, want exactly once", id, tag, byID[id])
		}
		if tagOf[id] != tag {
			t.Errorf("message %s reached the sink with X-Ops-Tag %q, want %q", id, tagOf[id], tag)
		}
	}
	for id, n := range byID {
		if _, ok := want[id]; !ok {
			t.Errorf("the sink received %s (%d times), which no client saw acknowledged", id, n)
		}
	}
	if noID != 0 {
		t.Errorf("the sink received %d messages without Sluice's Received field", noID)
	}
}

// ---------------------------------------------------------------- 1. metrics, health

// TestOpsMetricsAfterScriptedSession: one connection with a wrong
// password, a right one, a sender the login does not own (553) and one good
// message moves exactly the counters it should, by exactly that much; the
// spool gauge counts the message; /healthz and /readyz answer 200.
func TestOpsMetricsAfterScriptedSession(t *testing.T) {
	t.Parallel()
	httpAddr := freeAddr(t)
	s := startServerWith(t, fmt.Sprintf("\n[http]\nlisten = %q\n", httpAddr), alice)
	base := "http://" + httpAddr

	if body := opsWaitStatus(t, base+"/healthz", 200); strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz body %q, want \"ok\"", body)
	}
	if body := opsWaitStatus(t, base+"/readyz", 200); strings.TrimSpace(body) != "ready" {
		t.Errorf("/readyz body %q, want \"ready\"", body)
	}

	// The harness made one probe connection to each listener to see that
	// the server is up; they are counted a moment after the accept.
	opsWait(t, opsTimeout, "the harness' probe connections counted", func() (bool, string) {
		m := opsScrape(t, base)
		a := m.value("sluice_connections_total", "listener", "submission", "result", "accepted")
		b := m.value("sluice_connections_total", "listener", "submissions", "result", "accepted")
		return a >= 1 && b >= 1, fmt.Sprintf("submission %v, submissions %v", a, b)
	})
	before := opsScrape(t, base)
	if got := before.value("sluice_spool_messages"); got != 0 {
		t.Fatalf("sluice_spool_messages = %v before any message, want 0", got)
	}

	// The scripted session, on one connection.
	c, err := opsDial(s.submission, false)
	if err != nil {
		t.Fatal(err)
	}
	if code, text, err := c.auth(alice.addr, "wrong-"+alice.password); err != nil || code != 535 || !strings.HasPrefix(text, "5.7.8 ") {
		t.Fatalf("AUTH with a wrong password: %d %s (%v), want 535 5.7.8", code, text, err)
	}
	if code, text, err := c.auth(alice.addr, alice.password); err != nil || code != 235 {
		t.Fatalf("AUTH with the right password: %d %s (%v), want 235", code, text, err)
	}
	if code, text, err := c.cmd("MAIL FROM:<mallory@elsewhere.test>"); err != nil || code != 553 || !strings.HasPrefix(text, "5.7.1 ") {
		t.Fatalf("MAIL FROM a sender alice does not own: %d %s (%v), want 553 5.7.1", code, text, err)
	}
	r, err := c.send(alice.addr, "carol@remote.test", opsMessage(alice.addr, "carol@remote.test", "metrics-"+opsLetters(1)))
	id, ok := r.queued()
	if err != nil || !ok {
		t.Fatalf("good message: %v (%v)", r, err)
	}
	if code, _, err := c.cmd("QUIT"); err != nil || code != 221 {
		t.Errorf("QUIT: %d %v", code, err)
	}
	c.conn.Close()
	readSpooled(t, s.dataDir, id)

	after := opsScrape(t, base)
	for _, tc := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"sluice_connections_total", []string{"listener", "submission", "result", "accepted"}, 1},
		{"sluice_connections_total", []string{"listener", "submission", "result", "refused"}, 0},
		{"sluice_connections_total", []string{"listener", "submissions", "result", "accepted"}, 0},
		{"sluice_auth_total", []string{"mechanism", "PLAIN", "result", "ok"}, 1},
		{"sluice_auth_total", []string{"mechanism", "PLAIN", "result", "failed"}, 1},
		{"sluice_messages_total", []string{"verdict", "queued", "stage", "accepted"}, 1},
	} {
		d := after.value(tc.name, tc.labels...) - before.value(tc.name, tc.labels...)
		if d != tc.delta {
			t.Errorf("%s%v moved by %v, want %v", tc.name, tc.labels, d, tc.delta)
		}
	}
	// Nothing else moved: no other auth result, no refused or held message
	// (the 553 comes at MAIL, before any message).
	for _, fam := range []string{"sluice_auth_total", "sluice_messages_total", "sluice_connections_total"} {
		b, a := before.series(fam), after.series(fam)
		total := 0.0
		for k, v := range a {
			total += v - b[k]
		}
		want := map[string]float64{"sluice_auth_total": 2, "sluice_messages_total": 1, "sluice_connections_total": 1}[fam]
		if total != want {
			t.Errorf("%s moved by %v in all, want %v: before %v, after %v", fam, total, want, b, a)
		}
	}
	if got := after.value("sluice_spool_messages"); got != 1 {
		t.Errorf("sluice_spool_messages = %v with one queued message, want 1", got)
	}
	if got := after.value("sluice_spool_oldest_age_seconds"); got < 0 || got > 600 {
		t.Errorf("sluice_spool_oldest_age_seconds = %v for a message just queued", got)
	}
	for _, fam := range []string{"sluice_connections_total", "sluice_auth_total", "sluice_messages_total"} {
		if f := after[fam]; f == nil || f.GetType() != dto.MetricType_COUNTER {
			t.Errorf("%s is not exposed as a counter", fam)
		}
	}
	if f := after["sluice_spool_messages"]; f == nil || f.GetType() != dto.MetricType_GAUGE {
		t.Errorf("sluice_spool_messages is not exposed as a gauge")
	}
	opsGet(t, base+"/healthz", 200)
	opsGet(t, base+"/readyz", 200)
}

// TestOpsReadyzFollowsRedis: with a shared Redis configured, /readyz is
// 503 while Redis is down and 200 again once it is back; /healthz (the
// process is alive) stays 200 throughout.
func TestOpsReadyzFollowsRedis(t *testing.T) {
	t.Parallel()
	red := redistest.Start(t)
	httpAddr := freeAddr(t)
	startServerWith(t, fmt.Sprintf("\n[http]\nlisten = %q\n\n[quota]\nredis_url = %q\n", httpAddr, red.URL()), alice)
	base := "http://" + httpAddr

	opsWaitStatus(t, base+"/readyz", 200)
	red.Stop()
	body := opsWaitStatus(t, base+"/readyz", 503)
	if !strings.Contains(body, "redis unreachable") {
		t.Errorf("/readyz with Redis down says %q, want it to name Redis", body)
	}
	opsGet(t, base+"/healthz", 200)
	red.Restart()
	opsWaitStatus(t, base+"/readyz", 200)
	opsGet(t, base+"/healthz", 200)
}

// ---------------------------------------------------------------- 2. SIGHUP

// TestSIGHUPReload: SIGHUP applies a changed [quota] messages_per_hour, a
// DKIM key made with "sluice dkim keygen" and a renewed certificate to new
// mail and new connections, without dropping an open, authenticated, idle
// session, which can still send afterwards. A configuration with a syntax
// error, or an invalid value, is refused with a log line, and the server
// keeps serving with the old one.
func TestSIGHUPReload(t *testing.T) {
	t.Parallel()
	tlsDir := t.TempDir()
	certFile, keyFile := filepath.Join(tlsDir, "cert.pem"), filepath.Join(tlsDir, "key.pem")
	certA, keyA := opsCert(t, 1001)
	opsWriteFile(t, certFile, certA, 0o644)
	opsWriteFile(t, keyFile, keyA, 0o600)
	extra := fmt.Sprintf("\n[quota]\nmessages_per_hour = 2\n\n[tls]\ncert_file = %q\nkey_file = %q\n", certFile, keyFile)
	s := startServerWith(t, extra, alice)
	n := 0
	msg := func() []byte {
		n++
		return opsMessage(alice.addr, "dave@remote.test", "reload-"+opsLetters(n))
	}

	// The session that stays open, authenticated and idle, across reloads.
	idle, err := opsDial(s.submission, false)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.conn.Close()
	if code, text, err := idle.auth(alice.addr, alice.password); err != nil || code != 235 {
		t.Fatalf("AUTH on the idle session: %d %s %v", code, text, err)
	}

	// Before: certificate 1001, quota 2, no DKIM signature.
	for _, l := range []struct {
		addr     string
		implicit bool
	}{{s.submission, false}, {s.tlsAddr, true}} {
		if got := opsPeerSerial(t, l.addr, l.implicit); got != 1001 {
			t.Fatalf("%s shows certificate serial %d, want 1001 from [tls] cert_file", l.addr, got)
		}
	}
	id := opsMustQueue(t, s.submission, false, alice, "dave@remote.test", msg())
	if sigs := dkimSignatures(t, readSpooled(t, s.dataDir, id).msg); len(sigs) != 0 {
		t.Fatalf("message signed before any DKIM key exists: %v", sigs)
	}
	opsMustQueue(t, s.tlsAddr, true, alice, "dave@remote.test", msg())
	r, err := opsSendOne(s.submission, false, alice, "dave@remote.test", msg())
	if err != nil || r.stage != "RCPT" || r.code != 451 || !strings.HasPrefix(r.text, "4.7.1 ") {
		t.Fatalf("third message with messages_per_hour = 2: %v (%v), want 451 4.7.1 at RCPT", r, err)
	}

	// The changes: quota 2 -> 5, a DKIM key for example.test, certificate
	// 1001 -> 2002.
	opsEditConfig(t, s, "messages_per_hour = 2\n", "messages_per_hour = 5\n")
	recs := dkimKeygen(t, s, "example.test", "hup", "ed25519")
	certB, keyB := opsCert(t, 2002)
	opsWriteFile(t, keyFile, keyB, 0o600)
	opsWriteFile(t, certFile, certB, 0o644)
	opsReload(t, s)

	for _, l := range []struct {
		addr     string
		implicit bool
	}{{s.submission, false}, {s.tlsAddr, true}} {
		if got := opsPeerSerial(t, l.addr, l.implicit); got != 2002 {
			t.Errorf("after SIGHUP a new TLS connection to %s shows certificate serial %d, want the renewed 2002", l.addr, got)
		}
	}
	// The next message is signed with the new key, and the raised quota
	// lets it through.
	id = opsMustQueue(t, s.submission, false, alice, "dave@remote.test", msg())
	if got := dkimSignatures(t, readSpooled(t, s.dataDir, id).msg); len(got) != 1 || got[0]["d"] != "example.test" || got[0]["s"] != "hup" || recs[0].name != "hup._domainkey.example.test" {
		t.Errorf("first message after keygen and SIGHUP: DKIM signatures %v, want one with d=example.test s=hup", got)
	}
	// The idle session survived and sends on the new configuration.
	r, err = idle.send(alice.addr, "dave@remote.test", msg())
	if _, ok := r.queued(); err != nil || !ok {
		t.Fatalf("the session opened before SIGHUP: %v (%v), want 250 queued", r, err)
	}
	if serial := idle.state.PeerCertificates[0].SerialNumber.Int64(); serial != 1001 {
		t.Errorf("the idle session's TLS state changed under it: serial %d", serial)
	}

	// An invalid configuration is refused, and nothing changes: quota 5,
	// certificate 2002.
	good, err := os.ReadFile(s.configPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ name, old, new, want string }{
		{"syntax error", "messages_per_hour = 5\n", "messages_per_hour = 5\nthis is not toml = = \n", "line "},
		{"invalid value", "messages_per_hour = 5\n", "messages_per_hour = -1\n", "messages_per_hour must be 0 (unlimited) or more"},
	} {
		opsWriteFile(t, s.configPath, good, 0o600)
		opsEditConfig(t, s, bad.old, bad.new)
		certC, keyC := opsCert(t, 3003) // would be loaded by a reload
		opsWriteFile(t, keyFile, keyC, 0o600)
		opsWriteFile(t, certFile, certC, 0o644)
		line := opsReloadRefused(t, s)
		if !strings.Contains(line, s.configPath) || !strings.Contains(line, bad.want) {
			t.Errorf("%s: refusal log line does not name the file and the problem (%q):\n%s", bad.name, bad.want, line)
		}
		if got := opsPeerSerial(t, s.tlsAddr, true); got != 2002 {
			t.Errorf("%s: after a refused reload the server shows certificate %d, want still 2002", bad.name, got)
		}
		if code, text, err := idle.cmd("NOOP"); err != nil || code != 250 {
			t.Errorf("%s: the idle session after a refused reload: NOOP %d %s %v", bad.name, code, text, err)
		}
	}
	// Still serving with the old limit of 5: message 5 passes, 6 does not.
	opsMustQueue(t, s.tlsAddr, true, alice, "dave@remote.test", msg())
	r, err = opsSendOne(s.submission, false, alice, "dave@remote.test", msg())
	if err != nil || r.code != 451 || !strings.HasPrefix(r.text, "4.7.1 ") {
		t.Errorf("sixth message with the kept messages_per_hour = 5: %v (%v), want 451 4.7.1", r, err)
	}
	if strings.Contains(s.stderr.String(), "level=ERROR msg=\"reload: certificate not reloaded") {
		t.Errorf("the valid reload logged a certificate error:\n%s", s.stderr.String())
	}
	opsWriteFile(t, s.configPath, good, 0o600)
	if code, _, err := idle.cmd("QUIT"); err != nil || code != 221 {
		t.Errorf("QUIT on the idle session: %d %v", code, err)
	}
}

// ---------------------------------------------------------------- 3. SIGTERM

// TestSIGTERMUnderLoad: concurrent senders (raw clients on both listeners
// and swaks) submit while the server gets SIGTERM. The listeners close at
// once, a session in the middle of its message may finish it, and the
// process exits 0 within [submission] shutdown_timeout; every message that
// got a 250 is in the spool under its queue ID, and nothing else is; after
// a restart every one of them is delivered to the smarthost exactly once.
func TestSIGTERMUnderLoad(t *testing.T) {
	t.Parallel()
	swaksBin := requireTool(t, "swaks", "swaks")
	sink := opsStartSink(t, false) // deferring: the spool keeps everything
	s := startServerWith(t, "\n[quota]\nmessages_per_hour = 0\n"+sink.relayTOML(), alice)

	// [submission] belongs to the harness' base config; the shutdown
	// deadline is set there by editing it and reloading.
	const shutdownTimeout = 8 * time.Second
	opsEditConfig(t, s, "[submission]\n", fmt.Sprintf("[submission]\nshutdown_timeout = %q\n", shutdownTimeout.String()))
	opsReload(t, s)

	var (
		mu      sync.Mutex
		acked   = map[string]string{} // queue ID -> tag
		errs    []string              // failures before SIGTERM
		termed  atomic.Bool
		counter atomic.Int64
		wg      sync.WaitGroup
	)
	record := func(id, tag string) {
		mu.Lock()
		acked[id] = tag
		mu.Unlock()
	}
	failed := func(format string, args ...any) {
		if !termed.Load() {
			mu.Lock()
			errs = append(errs, fmt.Sprintf(format, args...))
			mu.Unlock()
		}
	}
	const maxPerSender = 150 // a sender still served after this many is a bug
	raw := func(implicit bool, name string) {
		defer wg.Done()
		addr := s.submission
		if implicit {
			addr = s.tlsAddr
		}
		for i := 0; i < maxPerSender; i++ {
			tag := "term-" + name + "-" + opsLetters(int(counter.Add(1)))
			r, err := opsSendOne(addr, implicit, alice, "erin@remote.test", opsMessage(alice.addr, "erin@remote.test", tag))
			if id, ok := r.queued(); ok {
				record(id, tag)
				continue
			}
			if termed.Load() {
				return // refused or cut after SIGTERM: fine, it was not acknowledged
			}
			failed("%s: %v (%v)", tag, r, err)
			return
		}
		failed("%s: still accepted after %d messages", name, maxPerSender)
	}
	viaSwaks := func(name string) {
		defer wg.Done()
		for i := 0; i < maxPerSender; i++ {
			tag := "term-" + name + "-" + opsLetters(int(counter.Add(1)))
			ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
			cmd := exec.CommandContext(ctx, swaksBin, "--server", s.submission, "--tls",
				"--helo", "client.sluice.test", "--auth", "PLAIN", "--auth-user", alice.addr, "--auth-password", alice.password,
				"--from", alice.addr, "--to", "erin@remote.test",
				"--header", "Subject: ops "+tag, "--add-header", "X-Ops-Tag: "+tag, "--body", "this is message "+tag, "--timeout", "20")
			cmd.Env = cleanEnv()
			out, err := cmd.CombinedOutput()
			cancel()
			if m := queuedRe.FindAllStringSubmatch(string(out), -1); err == nil && len(m) == 1 {
				record(m[0][1], tag)
				continue
			}
			if termed.Load() {
				return
			}
			failed("%s: swaks: %v\n%s", tag, err, out)
			return
		}
		failed("%s: still accepted after %d messages", name, maxPerSender)
	}
	for i := 0; i < 3; i++ {
		wg.Add(2)
		go raw(false, "starttls"+opsLetters(i))
		go raw(true, "implicit"+opsLetters(i))
	}
	wg.Add(2)
	go viaSwaks("swaksa")
	go viaSwaks("swaksb")

	// One more session is in the middle of its message when SIGTERM comes:
	// half the message sent, the rest after the listeners closed.
	inflightTag := "term-inflight"
	inflight, err := opsDial(s.submission, false)
	if err != nil {
		t.Fatal(err)
	}
	defer inflight.conn.Close()
	if code, text, err := inflight.auth(alice.addr, alice.password); err != nil || code != 235 {
		t.Fatalf("in-flight session AUTH: %d %s %v", code, text, err)
	}
	for _, c := range []struct {
		line string
		want int
	}{{"MAIL FROM:<" + alice.addr + ">", 250}, {"RCPT TO:<erin@remote.test>", 250}, {"DATA", 354}} {
		if code, text, err := inflight.cmd("%s", c.line); err != nil || code != c.want {
			t.Fatalf("in-flight session %s: %d %s %v", c.line, code, text, err)
		}
	}
	inflightMsg := opsMessage(alice.addr, "erin@remote.test", inflightTag)
	half := bytes.Index(inflightMsg, []byte("\r\n\r\n"))
	dw := inflight.tp.DotWriter()
	if _, err := dw.Write(inflightMsg[:half]); err != nil {
		t.Fatal(err)
	}
	if err := inflight.tp.W.Flush(); err != nil {
		t.Fatal(err)
	}

	// SIGTERM once the load is well under way.
	opsWait(t, opsTimeout, "senders acknowledged 30 messages", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("sending failed before SIGTERM:\n%s", strings.Join(errs, "\n"))
		}
		return len(acked) >= 30, fmt.Sprintf("%d acknowledged", len(acked))
	})
	termed.Store(true)
	s.stopping = true
	termAt := time.Now()
	opsSignal(t, s, syscall.SIGTERM)

	// The listeners close at once; the in-flight session may finish.
	opsWait(t, shutdownTimeout, "both listeners refuse new connections after SIGTERM", func() (bool, string) {
		var open []string
		for _, a := range []string{s.submission, s.tlsAddr} {
			if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
				c.Close()
				open = append(open, a)
			}
		}
		return len(open) == 0, fmt.Sprintf("still accepting on %v", open)
	})
	if _, err := dw.Write(inflightMsg[half:]); err != nil {
		t.Fatalf("in-flight session after SIGTERM: %v", err)
	}
	if err := dw.Close(); err != nil {
		t.Fatalf("in-flight session after SIGTERM: %v", err)
	}
	code, text, err := inflight.tp.ReadResponse(0)
	inflightID, ok := opsReply{"message", code, text}.queued()
	if err != nil || !ok {
		t.Fatalf("the message in flight at SIGTERM: %d %s (%v), want 250 queued: open sessions may finish", code, text, err)
	}
	record(inflightID, inflightTag)
	if code, _, err := inflight.cmd("QUIT"); err != nil || code != 221 {
		t.Errorf("QUIT of the in-flight session: %d %v", code, err)
	}
	inflight.conn.Close()
	select {
	case <-s.done:
	case <-time.After(shutdownTimeout + stopTimeout):
		s.cmd.Process.Kill()
		<-s.done
		t.Fatalf("sluice serve still running %v after SIGTERM (shutdown_timeout %v)", shutdownTimeout+stopTimeout, shutdownTimeout)
	}
	took := time.Since(termAt)
	if s.err != nil {
		t.Errorf("sluice serve exited with %v after SIGTERM, want status 0", s.err)
	}
	if took > shutdownTimeout {
		t.Errorf("sluice serve took %v to exit after SIGTERM, more than shutdown_timeout %v", took, shutdownTimeout)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(commandTimeout):
		t.Fatalf("senders still running %v after the server exited", commandTimeout)
	}
	mu.Lock()
	if len(errs) > 0 {
		t.Errorf("sending failed before SIGTERM:\n%s", strings.Join(errs, "\n"))
	}
	final := map[string]string{}
	for id, tag := range acked {
		final[id] = tag
	}
	mu.Unlock()
	serverLog := s.stderr.String()
	if !strings.Contains(serverLog, "shutting down: no new connections") || !strings.Contains(serverLog, "submission stopped") {
		t.Errorf("the log does not show the graceful shutdown:\n%s", serverLog)
	}
	if strings.Contains(serverLog, "sessions cut at the shutdown deadline") {
		t.Errorf("sessions were cut although every client ends its session at once:\n%s", serverLog)
	}
	t.Logf("%d messages acknowledged; the server exited %v after SIGTERM", len(final), took.Round(time.Millisecond))

	// Every acknowledged message is in the spool, as sent; nothing else is.
	spooled := map[string]bool{}
	for _, id := range spoolIDs(t, s.dataDir) {
		spooled[id] = true
	}
	for id, tag := range final {
		sp := readSpooled(t, s.dataDir, id)
		if m := opsTagRe.FindSubmatch(sp.msg); m == nil || string(m[1]) != tag {
			t.Errorf("spool file %s does not hold message %s:\n%s", id, tag, dkimHead(sp.msg))
		}
	}
	for id := range spooled {
		if _, ok := final[id]; !ok {
			t.Errorf("spool holds %s, which no client saw acknowledged", id)
		}
	}
	if byID, _, _ := sink.snapshot(); len(byID) != 0 {
		t.Fatalf("the closed sink received messages: %v", byID)
	}

	// Restart with the sink accepting: all of them are delivered, once.
	sink.setOpen(true)
	s.restart()
	opsWaitDelivered(t, sink, final, s)
}

// ---------------------------------------------------------------- 5. autoconfig

// Thunderbird's config-v1.1.xml.
type opsTBConfig struct {
	XMLName  xml.Name `xml:"clientConfig"`
	Version  string   `xml:"version,attr"`
	Provider struct {
		ID          string        `xml:"id,attr"`
		Domains     []string      `xml:"domain"`
		DisplayName string        `xml:"displayName"`
		Incoming    []opsTBServer `xml:"incomingServer"`
		Outgoing    []opsTBServer `xml:"outgoingServer"`
	} `xml:"emailProvider"`
}

type opsTBServer struct {
	Type           string   `xml:"type,attr"`
	Hostname       string   `xml:"hostname"`
	Port           int      `xml:"port"`
	SocketType     string   `xml:"socketType"`
	Authentication []string `xml:"authentication"`
	Username       string   `xml:"username"`
}

// Outlook's POX Autodiscover response.
const (
	opsADNS         = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
	opsADResponseNS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)

type opsAutodiscover struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response *struct {
		XMLName xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
		Account *struct {
			AccountType string        `xml:"AccountType"`
			Action      string        `xml:"Action"`
			Protocols   []opsADServer `xml:"Protocol"`
		} `xml:"Account"`
	} `xml:"Response"`
}

type opsADServer struct {
	Type         string `xml:"Type"`
	Server       string `xml:"Server"`
	Port         int    `xml:"Port"`
	SSL          string `xml:"SSL"`
	SPA          string `xml:"SPA"`
	AuthRequired string `xml:"AuthRequired"`
	LoginName    string `xml:"LoginName"`
}

// opsPlist parses an XML property list into Go values: map[string]any,
// []any, string, int64, float64, bool. It enforces the structure (one root
// value in <plist version="1.0">, keys and values alternating in a dict).
func opsPlist(data []byte) (any, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	var doctype bool
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, fmt.Errorf("no <plist> element: %v", err)
		}
		switch tk := tok.(type) {
		case xml.Directive:
			if strings.HasPrefix(string(tk), "DOCTYPE plist") {
				doctype = true
			}
		case xml.StartElement:
			if tk.Name.Local != "plist" {
				return nil, fmt.Errorf("root element <%s>, want <plist>", tk.Name.Local)
			}
			if !doctype {
				return nil, errors.New("no <!DOCTYPE plist ...> before <plist>")
			}
			version := ""
			for _, a := range tk.Attr {
				if a.Name.Local == "version" {
					version = a.Value
				}
			}
			if version != "1.0" {
				return nil, fmt.Errorf("<plist version=%q>, want 1.0", version)
			}
			v, err := opsPlistValue(d, nil)
			if err != nil {
				return nil, err
			}
			if end, err := opsPlistNext(d); err != nil || end != nil {
				return nil, fmt.Errorf("<plist> holds more than one value (%v %v)", end, err)
			}
			return v, nil
		}
	}
}

// opsPlistNext returns the next start element, or nil at an end element.
func opsPlistNext(d *xml.Decoder) (*xml.StartElement, error) {
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			return &tk, nil
		case xml.EndElement:
			return nil, nil
		case xml.CharData:
			if len(bytes.TrimSpace(tk)) != 0 {
				return nil, fmt.Errorf("text %q between plist elements", tk)
			}
		}
	}
}

// opsPlistValue reads one value; start is its element when already read.
func opsPlistValue(d *xml.Decoder, start *xml.StartElement) (any, error) {
	if start == nil {
		var err error
		if start, err = opsPlistNext(d); err != nil || start == nil {
			return nil, fmt.Errorf("expected a value: %v", err)
		}
	}
	text := func() (string, error) {
		var s string
		err := d.DecodeElement(&s, start)
		return s, err
	}
	switch start.Name.Local {
	case "dict":
		m := map[string]any{}
		for {
			k, err := opsPlistNext(d)
			if err != nil {
				return nil, err
			}
			if k == nil {
				return m, nil
			}
			if k.Name.Local != "key" {
				return nil, fmt.Errorf("<%s> in a dict where a <key> belongs", k.Name.Local)
			}
			var key string
			if err := d.DecodeElement(&key, k); err != nil {
				return nil, err
			}
			if _, dup := m[key]; dup {
				return nil, fmt.Errorf("key %q twice in one dict", key)
			}
			v, err := opsPlistValue(d, nil)
			if err != nil {
				return nil, fmt.Errorf("value of %q: %w", key, err)
			}
			m[key] = v
		}
	case "array":
		var a []any
		for {
			e, err := opsPlistNext(d)
			if err != nil {
				return nil, err
			}
			if e == nil {
				return a, nil
			}
			v, err := opsPlistValue(d, e)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
	case "string", "data", "date":
		return text()
	case "integer":
		s, err := text()
		if err != nil {
			return nil, err
		}
		return strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	case "real":
		s, err := text()
		if err != nil {
			return nil, err
		}
		return strconv.ParseFloat(strings.TrimSpace(s), 64)
	case "true", "false":
		if err := d.Skip(); err != nil {
			return nil, err
		}
		return start.Name.Local == "true", nil
	}
	return nil, fmt.Errorf("<%s> is not a plist value element", start.Name.Local)
}

var opsUUIDRe = regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$`)

// opsAutoconfigPaths are the autoconfig documents (method, path).
var opsAutoconfigPaths = [][2]string{
	{http.MethodGet, "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.test"},
	{http.MethodGet, "/mail/config-v1.1.xml?emailaddress=alice%40example.test"},
	{http.MethodPost, "/autodiscover/autodiscover.xml"},
	{http.MethodPost, "/Autodiscover/Autodiscover.xml"},
	{http.MethodGet, "/apple.mobileconfig?email=alice%40example.test"},
}

func opsAutodiscoverRequest(email string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(email))
	return `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>` + b.String() + `</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>
`
}

// TestAutoconfigDocuments: with [http] autoconfig = true each document
// parses and carries what its schema requires and what the server offers
// (465 implicit TLS and 587 STARTTLS on the hostname, the IMAP host for
// incoming mail); an address with XML-special characters comes back intact.
// Switched off with SIGHUP, every document is 404.
func TestAutoconfigDocuments(t *testing.T) {
	t.Parallel()
	httpAddr := freeAddr(t)
	s := startServerWith(t, fmt.Sprintf("\n[http]\nlisten = %q\nautoconfig = true\nimap_host = \"imap.example.test\"\n", httpAddr), alice)
	base := "http://" + httpAddr
	opsWaitStatus(t, base+"/healthz", 200)

	for _, email := range []string{"alice@example.test", "o'neil&co@example.test"} {
		t.Run(strings.NewReplacer("'", "_", "&", "_", "@", "_").Replace(email), func(t *testing.T) {
			// Thunderbird, at both of its addresses.
			for _, path := range []string{"/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"} {
				h, body := opsGet(t, base+path+"?emailaddress="+url.QueryEscape(email), 200)
				if ct := h.Get("Content-Type"); !strings.Contains(ct, "xml") {
					t.Errorf("%s: Content-Type %q", path, ct)
				}
				var cc opsTBConfig
				if err := xml.Unmarshal([]byte(body), &cc); err != nil {
					t.Fatalf("%s does not parse: %v\n%s", path, err, body)
				}
				p := cc.Provider
				if cc.Version != "1.1" || p.ID != "example.test" || len(p.Domains) != 1 || p.Domains[0] != "example.test" || p.DisplayName == "" {
					t.Errorf("%s: clientConfig version %q, emailProvider id %q, domains %q, displayName %q; want 1.1, example.test, [example.test], non-empty\n%s",
						path, cc.Version, p.ID, p.Domains, p.DisplayName, body)
				}
				want := map[string]bool{"465 SSL": false, "587 STARTTLS": false}
				for _, o := range p.Outgoing {
					key := fmt.Sprintf("%d %s", o.Port, o.SocketType)
					if _, ok := want[key]; !ok {
						t.Errorf("%s: unexpected outgoing server %+v", path, o)
						continue
					}
					want[key] = true
					if o.Type != "smtp" || o.Hostname != "mail.sluice.test" || len(o.Authentication) == 0 || o.Authentication[0] != "password-cleartext" || o.Username != "%EMAILADDRESS%" {
						t.Errorf("%s: outgoing server %+v, want type smtp, hostname mail.sluice.test, password-cleartext, %%EMAILADDRESS%%", path, o)
					}
				}
				for k, seen := range want {
					if !seen {
						t.Errorf("%s: no outgoingServer with port/socketType %s\n%s", path, k, body)
					}
				}
				if len(p.Incoming) != 1 || p.Incoming[0].Type != "imap" || p.Incoming[0].Hostname != "imap.example.test" || p.Incoming[0].Port != 993 || p.Incoming[0].SocketType != "SSL" {
					t.Errorf("%s: incoming servers %+v, want IMAP imap.example.test:993 SSL", path, p.Incoming)
				}
			}

			// Outlook, at both spellings.
			for _, path := range []string{"/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"} {
				code, h, body, err := opsFetch(http.MethodPost, base+path, "text/xml", opsAutodiscoverRequest(email))
				if err != nil || code != 200 {
					t.Fatalf("POST %s: %d %v\n%s", path, code, err, body)
				}
				if ct := h.Get("Content-Type"); !strings.Contains(ct, "xml") {
					t.Errorf("%s: Content-Type %q", path, ct)
				}
				var ad opsAutodiscover
				if err := xml.Unmarshal([]byte(body), &ad); err != nil {
					t.Fatalf("%s does not parse with the Autodiscover namespaces: %v\n%s", path, err, body)
				}
				if ad.Response == nil || ad.Response.Account == nil {
					t.Fatalf("%s: no Autodiscover/Response/Account in the response namespaces\n%s", path, body)
				}
				acc := ad.Response.Account
				if acc.AccountType != "email" || acc.Action != "settings" {
					t.Errorf("%s: AccountType %q, Action %q; want email, settings", path, acc.AccountType, acc.Action)
				}
				var smtpProto, imapProto *opsADServer
				for i := range acc.Protocols {
					switch acc.Protocols[i].Type {
					case "SMTP":
						smtpProto = &acc.Protocols[i]
					case "IMAP":
						imapProto = &acc.Protocols[i]
					}
				}
				if smtpProto == nil {
					t.Fatalf("%s: no Protocol of Type SMTP\n%s", path, body)
				}
				if smtpProto.Server != "mail.sluice.test" || smtpProto.Port != 465 || smtpProto.SSL != "on" || smtpProto.AuthRequired != "on" || smtpProto.LoginName != email {
					t.Errorf("%s: SMTP protocol %+v, want mail.sluice.test 465 SSL on, AuthRequired on, LoginName %s", path, *smtpProto, email)
				}
				if imapProto == nil || imapProto.Server != "imap.example.test" || imapProto.Port != 993 || imapProto.SSL != "on" {
					t.Errorf("%s: IMAP protocol %+v, want imap.example.test 993 SSL on", path, imapProto)
				}
			}

			// Apple.
			h, body := opsGet(t, base+"/apple.mobileconfig?email="+url.QueryEscape(email), 200)
			if ct := h.Get("Content-Type"); ct != "application/x-apple-aspen-config" {
				t.Errorf("mobileconfig: Content-Type %q, want application/x-apple-aspen-config", ct)
			}
			if cd := h.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") || !strings.Contains(cd, ".mobileconfig") {
				t.Errorf("mobileconfig: Content-Disposition %q", cd)
			}
			v, err := opsPlist([]byte(body))
			if err != nil {
				t.Fatalf("mobileconfig is not a valid plist: %v\n%s", err, body)
			}
			prof, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("mobileconfig: the root value is %T, want a dict", v)
			}
			if prof["PayloadType"] != "Configuration" || prof["PayloadVersion"] != int64(1) || prof["PayloadIdentifier"] == nil || prof["PayloadDisplayName"] == nil {
				t.Errorf("mobileconfig profile: PayloadType %v, PayloadVersion %v, PayloadIdentifier %v, PayloadDisplayName %v",
					prof["PayloadType"], prof["PayloadVersion"], prof["PayloadIdentifier"], prof["PayloadDisplayName"])
			}
			profUUID, _ := prof["PayloadUUID"].(string)
			if !opsUUIDRe.MatchString(profUUID) {
				t.Errorf("mobileconfig profile: PayloadUUID %q is not a UUID", prof["PayloadUUID"])
			}
			content, _ := prof["PayloadContent"].([]any)
			if len(content) != 1 {
				t.Fatalf("mobileconfig: PayloadContent %v, want an array of one payload", prof["PayloadContent"])
			}
			mail, _ := content[0].(map[string]any)
			for key, want := range map[string]any{
				"PayloadType":                  "com.apple.mail.managed",
				"PayloadVersion":               int64(1),
				"EmailAddress":                 email,
				"EmailAccountType":             "EmailTypeIMAP",
				"OutgoingMailServerHostName":   "mail.sluice.test",
				"OutgoingMailServerPortNumber": int64(465),
				"OutgoingMailServerUseSSL":     true,
				"OutgoingMailServerUsername":   email,
				"IncomingMailServerHostName":   "imap.example.test",
				"IncomingMailServerPortNumber": int64(993),
				"IncomingMailServerUseSSL":     true,
			} {
				if mail[key] != want {
					t.Errorf("mobileconfig mail payload: %s = %#v, want %#v", key, mail[key], want)
				}
			}
			mailUUID, _ := mail["PayloadUUID"].(string)
			if !opsUUIDRe.MatchString(mailUUID) || mailUUID == profUUID {
				t.Errorf("mobileconfig mail payload: PayloadUUID %q, want a UUID other than the profile's %q", mailUUID, profUUID)
			}
			if id, _ := mail["PayloadIdentifier"].(string); id == "" || id == prof["PayloadIdentifier"] {
				t.Errorf("mobileconfig mail payload: PayloadIdentifier %q, want its own", id)
			}
		})
	}
	if code, _, body, _ := opsFetch(http.MethodGet, base+"/apple.mobileconfig", "", ""); code != 400 {
		t.Errorf("mobileconfig without ?email=: status %d, want 400\n%s", code, body)
	}

	// Off by reload: every document is 404, the rest is still served.
	opsEditConfig(t, s, "autoconfig = true\n", "autoconfig = false\n")
	opsReload(t, s)
	opsAutoconfigAll404(t, base)
	opsGet(t, base+"/healthz", 200)
	opsGet(t, base+"/metrics", 200)
}

// TestAutoconfigOff: without autoconfig (the default) every document is 404
// while /metrics and the health endpoints are served.
func TestAutoconfigOff(t *testing.T) {
	t.Parallel()
	httpAddr := freeAddr(t)
	startServerWith(t, fmt.Sprintf("\n[http]\nlisten = %q\nimap_host = \"imap.example.test\"\n", httpAddr), alice)
	base := "http://" + httpAddr
	opsWaitStatus(t, base+"/healthz", 200)
	opsAutoconfigAll404(t, base)
	opsGet(t, base+"/metrics", 200)
	opsGet(t, base+"/readyz", 200)
}

func opsAutoconfigAll404(t *testing.T, base string) {
	t.Helper()
	for _, p := range opsAutoconfigPaths {
		body := ""
		if p[0] == http.MethodPost {
			body = opsAutodiscoverRequest("alice@example.test")
		}
		code, _, got, err := opsFetch(p[0], base+p[1], "text/xml", body)
		if err != nil || code != 404 {
			t.Errorf("%s %s with autoconfig off: status %d (%v), want 404\n%s", p[0], p[1], code, err, got)
		}
	}
}

// TestSIGTERMCutsSessionsAtDeadline: sessions that do not end by
// themselves (one idle after AUTH, one stalled in the middle of DATA) hold
// the shutdown until [submission] shutdown_timeout, are cut then, and the
// process still exits 0; the unfinished message is not in the spool.
func TestSIGTERMCutsSessionsAtDeadline(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, "", alice)
	const shutdownTimeout = 2 * time.Second
	opsEditConfig(t, s, "[submission]\n", fmt.Sprintf("[submission]\nshutdown_timeout = %q\n", shutdownTimeout.String()))
	opsReload(t, s)

	idle, err := opsDial(s.tlsAddr, true)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.conn.Close()
	if code, text, err := idle.auth(alice.addr, alice.password); err != nil || code != 235 {
		t.Fatalf("AUTH: %d %s %v", code, text, err)
	}
	stalled, err := opsDial(s.submission, false)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.conn.Close()
	if code, text, err := stalled.auth(alice.addr, alice.password); err != nil || code != 235 {
		t.Fatalf("AUTH: %d %s %v", code, text, err)
	}
	for _, c := range []struct {
		line string
		want int
	}{{"MAIL FROM:<" + alice.addr + ">", 250}, {"RCPT TO:<erin@remote.test>", 250}, {"DATA", 354}} {
		if code, text, err := stalled.cmd("%s", c.line); err != nil || code != c.want {
			t.Fatalf("%s: %d %s %v", c.line, code, text, err)
		}
	}
	dw := stalled.tp.DotWriter()
	dw.Write(opsMessage(alice.addr, "erin@remote.test", "term-stalled")[:40])
	if err := stalled.tp.W.Flush(); err != nil {
		t.Fatal(err)
	}

	s.stopping = true
	termAt := time.Now()
	opsSignal(t, s, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(shutdownTimeout + stopTimeout):
		s.cmd.Process.Kill()
		<-s.done
		t.Fatalf("sluice serve still running %v after SIGTERM with shutdown_timeout %v", shutdownTimeout+stopTimeout, shutdownTimeout)
	}
	took := time.Since(termAt)
	if s.err != nil {
		t.Errorf("sluice serve exited with %v after cutting sessions, want status 0", s.err)
	}
	if took < shutdownTimeout-100*time.Millisecond {
		t.Errorf("sluice serve exited %v after SIGTERM, before shutdown_timeout %v, with two sessions open", took, shutdownTimeout)
	}
	if !strings.Contains(s.stderr.String(), "sessions cut at the shutdown deadline") {
		t.Errorf("the log does not say that sessions were cut at the deadline:\n%s", s.stderr.String())
	}
	// Both clients see their connection end.
	for name, c := range map[string]*opsConn{"idle": idle, "stalled": stalled} {
		c.conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c.conn); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
			t.Errorf("%s session after the deadline: %v, want the connection closed", name, err)
		}
	}
	if ids := spoolIDs(t, s.dataDir); len(ids) != 0 {
		t.Errorf("spool holds %v: the message cut in DATA was never acknowledged", ids)
	}
}
