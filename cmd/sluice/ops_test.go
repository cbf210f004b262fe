package main

// Operations tests: what an operator sees and does with a running "sluice
// serve": the Prometheus metrics and health endpoints, reloading with
// SIGHUP, stopping with SIGTERM under load, and the mail-client
// autoconfiguration documents. Like the other integration tests they run
// the real binary (harness_test.go) and talk to it over the network.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
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
	return c.sendMany(from, []string{to}, msg)
}

// sendMany runs one transaction to several recipients and returns the
// reply that ended it.
func (c *opsConn) sendMany(from string, rcpts []string, msg []byte) (opsReply, error) {
	if code, text, err := c.cmd("MAIL FROM:<%s>", from); err != nil || code != 250 {
		return opsReply{"MAIL", code, text}, err
	}
	for _, rc := range rcpts {
		if code, text, err := c.cmd("RCPT TO:<%s>", rc); err != nil || code != 250 {
			c.cmd("RSET")
			return opsReply{"RCPT", code, text}, err
		}
	}
	if code, text, err := c.cmd("DATA"); err != nil || code != 354 {
		return opsReply{"DATA", code, text}, err
	}
	w := c.tp.DotWriter()
	if _, err := w.Write(msg); err != nil {
		return opsReply{stage: "message"}, err
	}
	if err := w.Close(); err != nil {
		return opsReply{stage: "message"}, err
	}
	code, text, err := c.tp.ReadResponse(0)
	return opsReply{"message", code, text}, err
}

func (c *opsConn) quit() {
	c.cmd("QUIT")
	c.conn.Close()
}

// opsLogin dials addr and logs in as u; anything but 235 fails the test.
// The caller quits.
func opsLogin(t testing.TB, addr string, implicit bool, u testUser) *opsConn {
	t.Helper()
	c, err := opsDial(addr, implicit)
	if err != nil {
		t.Fatal(err)
	}
	if code, text, err := c.auth(u.addr, u.password); err != nil || code != 235 {
		c.quit()
		t.Fatalf("AUTH as %s on %s: %d %s %v, want 235", u.addr, addr, code, text, err)
	}
	return c
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
	k := &opsSink{open: open, byID: map[string]int{}, tagOf: map[string]string{}}
	k.addr = startSMTPSink(t, "sink.sluice.test", func() smtp.Session { return &opsSinkSession{k: k} })
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
func (k *opsSink) relayTOML() string { return smarthostTOML(k.addr, "1s") }

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
