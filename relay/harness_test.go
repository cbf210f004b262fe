package relay_test

// The delivery test harness: a real DNS server (dnstest) answering MX and
// A records, real SMTP receivers (go-smtp servers scripted per test) on
// distinct 127.0.0.x addresses sharing one port (Config.MXPort is a single
// port for every MX host), a spool in a temporary directory and a relay
// delivering it. Tests assert what a user would check: what each receiver
// got, with which envelope, over TLS or not, what the sender's bounce says,
// and what is left in the queue.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"sluice/relay"
	"sluice/relay/dnstest"
	"sluice/relay/resolver"
	"sluice/relay/spool"
)

// waitTimeout bounds every poll: far above what any step takes here, so
// that only a real hang fails a test.
const waitTimeout = 15 * time.Second

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Receivers

// txn is one mail transaction a receiver saw.
type txn struct {
	From     string
	Tried    []string // every RCPT, in order
	Rcpts    []string // the RCPTs it accepted
	Data     []byte   // nil until DATA
	TLS      bool     // MAIL came over TLS
	AuthUser string   // the AUTH identity of the session, if any
	Accepted bool     // DATA answered 250: the message is delivered
}

// receiver is a scripted go-smtp server on one loopback address.
type receiver struct {
	name string // for messages
	ip   string
	addr string // ip:port
	srv  *smtp.Server

	mu         sync.Mutex
	accepts    int // TCP connections
	mails      int // MAIL commands
	plainMails int // MAIL commands outside TLS
	txns       []*txn
	logouts    int      // sessions ended (connection closed, or STARTTLS)
	auths      []string // AUTH identities that succeeded
	authFails  int
	// Scripts, called with mu held. n is how many times this hook ran,
	// this call included.
	onMail func(n int, from string) error
	onRcpt func(n int, rcpt string) error
	onData func(n int, tx *txn) error
	nMail  int
	nRcpt  int
	nData  int
	// stall, when set, makes the next DATA wait (after reading the
	// message) until it is closed; stalled is closed when it starts.
	stall   chan struct{}
	stalled chan struct{}
	// AUTH PLAIN required when user is set; LOGIN instead with loginOnly.
	user, pass string
	loginOnly  bool
	discard    bool // keep no message bytes (benchmarks)
}

// smtpErr builds a reply such as smtpErr(451, "4.7.1 try again later").
func smtpErr(code int, text string) error {
	e := &smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: text}
	var a, b, c int
	if n, _ := fmt.Sscanf(text, "%d.%d.%d ", &a, &b, &c); n == 3 {
		e.EnhancedCode = smtp.EnhancedCode{a, b, c}
		e.Message = strings.SplitN(text, " ", 2)[1]
	}
	return e
}

// receiverOpt configures a receiver before it serves.
type receiverOpt func(*receiver, *smtp.Server)

// withTLS makes the receiver offer STARTTLS with cert.
func withTLS(cert tls.Certificate) receiverOpt {
	return func(_ *receiver, s *smtp.Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
}

// withTLSConfig makes the receiver offer STARTTLS with cfg.
func withTLSConfig(cfg *tls.Config) receiverOpt {
	return func(_ *receiver, s *smtp.Server) { s.TLSConfig = cfg }
}

// withServer changes the go-smtp server (timeouts, say).
func withServer(f func(*smtp.Server)) receiverOpt {
	return func(_ *receiver, s *smtp.Server) { f(s) }
}

// withAuth requires AUTH PLAIN as user/pass before MAIL.
func withAuth(user, pass string) receiverOpt {
	return func(r *receiver, _ *smtp.Server) { r.user, r.pass = user, pass }
}

// withAuthLogin requires AUTH LOGIN (and offers no other mechanism).
func withAuthLogin(user, pass string) receiverOpt {
	return func(r *receiver, _ *smtp.Server) { r.user, r.pass, r.loginOnly = user, pass, true }
}

// listenShared listens on port 0 of the first address and the same port of
// the others, retrying with another port when one is taken.
func listenShared(t testing.TB, ips []string) (int, []net.Listener) {
	t.Helper()
	for try := 0; try < 20; try++ {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v (Linux routes all of 127.0.0.0/8 to lo)", ips[0], err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		ls := []net.Listener{first}
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		if len(ls) == len(ips) {
			return port, ls
		}
		for _, l := range ls {
			l.Close()
		}
	}
	t.Fatalf("no port free on all of %v", ips)
	return 0, nil
}

type countingListener struct {
	net.Listener
	r *receiver
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.r.mu.Lock()
		l.r.accepts++
		l.r.mu.Unlock()
	}
	return c, err
}

func serveReceiver(t testing.TB, name string, l net.Listener, opts ...receiverOpt) *receiver {
	r := &receiver{name: name, ip: l.Addr().(*net.TCPAddr).IP.String(), addr: l.Addr().String()}
	r.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{r: r, c: c}, nil
	}))
	r.srv.Domain = name
	r.srv.ErrorLog = log.New(io.Discard, "", 0)
	r.srv.ReadTimeout = time.Minute
	r.srv.WriteTimeout = time.Minute
	for _, o := range opts {
		o(r, r.srv)
	}
	go r.srv.Serve(countingListener{l, r})
	t.Cleanup(func() {
		r.mu.Lock()
		if r.stall != nil {
			select {
			case <-r.stall:
			default:
				close(r.stall)
			}
		}
		r.mu.Unlock()
		r.srv.Close()
	})
	return r
}

// script sets the receiver's hooks (nil leaves one unchanged).
func (r *receiver) script(mailFn func(int, string) error, rcptFn func(int, string) error, dataFn func(int, *txn) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if mailFn != nil {
		r.onMail = mailFn
	}
	if rcptFn != nil {
		r.onRcpt = rcptFn
	}
	if dataFn != nil {
		r.onData = dataFn
	}
}

// stallNextData makes the receiver's next DATA wait, after reading the
// message, until release is called (the server then answers 451).
// reached waits until that DATA has begun.
func (r *receiver) stallNextData(t testing.TB) (reached, release func()) {
	stall, stalled := make(chan struct{}), make(chan struct{})
	r.mu.Lock()
	r.stall, r.stalled = stall, stalled
	r.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { close(stall) }) }
	t.Cleanup(release)
	reached = func() {
		t.Helper()
		select {
		case <-stalled:
		case <-time.After(waitTimeout):
			t.Fatalf("no delivery to %s reached DATA within %v", r.name, waitTimeout)
		}
	}
	return reached, release
}

// rejectRcpts answers RCPT with reply for the listed recipients, 250 else.
func (r *receiver) rejectRcpts(code int, text string, rcpts ...string) {
	r.script(nil, func(_ int, rc string) error {
		for _, x := range rcpts {
			if strings.EqualFold(rc, x) {
				return smtpErr(code, text)
			}
		}
		return nil
	}, nil)
}

func (r *receiver) counts() (accepts, mails, plainMails int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepts, r.mails, r.plainMails
}

// delivered returns the transactions answered 250 after DATA.
func (r *receiver) delivered() []txn {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []txn
	for _, x := range r.txns {
		if x.Accepted {
			out = append(out, *x)
		}
	}
	return out
}

// transactions returns every transaction, finished or not.
func (r *receiver) transactions() []txn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]txn, len(r.txns))
	for i, x := range r.txns {
		out[i] = *x
		out[i].Tried = append([]string(nil), x.Tried...)
		out[i].Rcpts = append([]string(nil), x.Rcpts...)
	}
	return out
}

// deliveredTo returns the delivered messages with rcpt among the accepted
// recipients.
func (r *receiver) deliveredTo(rcpt string) []txn {
	var out []txn
	for _, x := range r.delivered() {
		for _, rc := range x.Rcpts {
			if strings.EqualFold(rc, rcpt) {
				out = append(out, x)
				break
			}
		}
	}
	return out
}

// rcptCount is how many RCPT commands named rcpt.
func (r *receiver) rcptCount(rcpt string) int {
	n := 0
	for _, x := range r.transactions() {
		for _, rc := range x.Tried {
			if strings.EqualFold(rc, rcpt) {
				n++
			}
		}
	}
	return n
}

type session struct {
	r        *receiver
	c        *smtp.Conn
	cur      *txn
	authUser string
}

func (s *session) Reset() { s.cur = nil }
func (s *session) Logout() error {
	s.r.mu.Lock()
	s.r.logouts++
	s.r.mu.Unlock()
	return nil
}

func (s *session) AuthMechanisms() []string {
	switch {
	case s.r.user == "":
		return nil
	case s.r.loginOnly:
		return []string{sasl.Login}
	}
	return []string{sasl.Plain}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	check := func(identity, user, pass string) error {
		s.r.mu.Lock()
		defer s.r.mu.Unlock()
		if user != s.r.user || pass != s.r.pass || (identity != "" && identity != user) {
			s.r.authFails++
			return smtp.ErrAuthFailed
		}
		s.authUser = user
		s.r.auths = append(s.r.auths, user)
		return nil
	}
	switch {
	case s.r.user == "":
	case mech == sasl.Plain && !s.r.loginOnly:
		return sasl.NewPlainServer(check), nil
	case mech == sasl.Login && s.r.loginOnly:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// loginServer is the server side of AUTH LOGIN (go-sasl has only the
// client): "Username:" and "Password:" challenges, one answer each.
type loginServer struct {
	check func(identity, user, pass string) error
	user  string
	step  int
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	l.step++
	switch l.step {
	case 1:
		if len(resp) > 0 { // initial response: the username
			l.user, l.step = string(resp), 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 2:
		l.user = string(resp)
		return []byte("Password:"), false, nil
	case 3:
		return nil, true, l.check("", l.user, string(resp))
	}
	return nil, false, errors.New("unexpected AUTH LOGIN response")
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	_, isTLS := s.c.TLSConnectionState()
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mails++
	if !isTLS {
		r.plainMails++
	}
	if r.user != "" && s.authUser == "" {
		return smtp.ErrAuthRequired
	}
	r.nMail++
	if r.onMail != nil {
		if err := r.onMail(r.nMail, from); err != nil {
			return err
		}
	}
	s.cur = &txn{From: from, TLS: isTLS, AuthUser: s.authUser}
	r.txns = append(r.txns, s.cur)
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	s.cur.Tried = append(s.cur.Tried, to)
	r.nRcpt++
	if r.onRcpt != nil {
		if err := r.onRcpt(r.nRcpt, to); err != nil {
			return err
		}
	}
	s.cur.Rcpts = append(s.cur.Rcpts, to)
	return nil
}

func (s *session) Data(rd io.Reader) error {
	data, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	r := s.r
	r.mu.Lock()
	stall, stalled := r.stall, r.stalled
	r.stall, r.stalled = nil, nil
	r.mu.Unlock()
	if stall != nil {
		close(stalled)
		<-stall
		return smtpErr(451, "4.3.0 stalled transaction abandoned")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.discard {
		s.cur.Data = data
	}
	r.nData++
	if r.onData != nil {
		if err := r.onData(r.nData, s.cur); err != nil {
			return err
		}
	}
	s.cur.Accepted = true
	return nil
}

// ---------------------------------------------------------------------------
// The relay under test

// harness is one relay over a temporary spool, with its DNS and receivers.
type harness struct {
	t     *testing.T
	dns   *dnstest.Server
	res   *resolver.Resolver
	spool *spool.Spool
	dir   string
	port  int // the one port of every receiver (Config.MXPort)
	rx    map[string]*receiver

	sts     *relay.MTASTS
	sup     *relay.Suppressions
	explain relay.Explainer // nil: every reply is "unknown"

	relay   *relay.Relay
	stop    func() // stops the relay and waits for Run to return
	cancel  func() // ends Run's context without waiting
	logs    *logRecorder
	results *resultLog
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), rx: map[string]*receiver{}, logs: &logRecorder{}, results: &resultLog{}}
	h.dns = dnstest.Start(t, "127.0.0.1:0")
	h.res = resolver.New(h.dns.Addr)
	var err error
	h.spool, err = spool.Open(filepath.Join(h.dir, "spool"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay log:\n%s", h.logs.String())
		}
	})
	return h
}

// rxSpec is one receiver to start: its MX host name, its loopback
// address and its options.
type rxSpec struct {
	name, ip string
	opts     []receiverOpt
}

func rx(name, ip string, opts ...receiverOpt) rxSpec { return rxSpec{name, ip, opts} }

// receivers starts the receivers on one shared port (h.port, which becomes
// Config.MXPort) and publishes an A record for each name.
func (h *harness) receivers(specs ...rxSpec) {
	h.t.Helper()
	var ips []string
	for _, s := range specs {
		ips = append(ips, s.ip)
	}
	port, ls := listenShared(h.t, ips)
	h.port = port
	for i, l := range ls {
		h.rx[specs[i].name] = serveReceiver(h.t, specs[i].name, l, specs[i].opts...)
		h.dns.Add(h.t, fmt.Sprintf("%s. 300 IN A %s", specs[i].name, specs[i].ip))
	}
}

func (h *harness) mx(domain string, pref int, host string) {
	h.t.Helper()
	h.dns.Add(h.t, fmt.Sprintf("%s. 300 IN MX %d %s.", domain, pref, host))
}

// remote starts the one receiver most tests need: mx.remote.test
// (127.0.0.2, with opts), the MX of remote.test.
func (h *harness) remote(opts ...receiverOpt) *receiver {
	h.t.Helper()
	h.receivers(rx("mx.remote.test", "127.0.0.2", opts...))
	h.mx("remote.test", 10, "mx.remote.test")
	return h.rx["mx.remote.test"]
}

// remoteAndSender starts mx.remote.test (127.0.0.2), the MX of
// remote.test, and mx.sender.test (127.0.0.3), the MX of sender.test,
// where the DSNs to alice@sender.test arrive.
func (h *harness) remoteAndSender() (remote, sender *receiver) {
	h.t.Helper()
	h.receivers(rx("mx.remote.test", "127.0.0.2"), rx("mx.sender.test", "127.0.0.3"))
	h.mx("remote.test", 10, "mx.remote.test")
	h.mx("sender.test", 10, "mx.sender.test")
	return h.rx["mx.remote.test"], h.rx["mx.sender.test"]
}

// suppressions gives the relay (started after) a suppression list kept in
// suppress.json of the test's directory, entries lasting a day.
func (h *harness) suppressions() *relay.Suppressions {
	h.t.Helper()
	sup, err := relay.OpenSuppressions(filepath.Join(h.dir, "suppress.json"), 24*time.Hour)
	if err != nil {
		h.t.Fatal(err)
	}
	h.sup = sup
	return sup
}

// start runs the relay with the test defaults changed by edit.
func (h *harness) start(edit func(*relay.Config)) *relay.Relay {
	h.t.Helper()
	cfg := relay.Config{
		Mode: "mx", MXPort: h.port, HELO: "sluice.test", Hostname: "sluice.test",
		Workers: 8, PerDomain: 4,
		Retry:          []time.Duration{20 * time.Millisecond, 30 * time.Millisecond, 50 * time.Millisecond},
		MaxAge:         time.Hour,
		ConnectTimeout: 3 * time.Second, CommandTimeout: 10 * time.Second, IdleConnTimeout: 5 * time.Second,
	}
	if edit != nil {
		edit(&cfg)
	}
	logger := slog.New(h.logs)
	h.relay = relay.New(cfg, h.spool, h.res, h.sts, h.sup, h.explain, logger)
	h.relay.OnResult = h.results.add
	h.spool.OnEnqueue = h.relay.Enqueued
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.relay.Run(ctx)
	}()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(waitTimeout):
				h.t.Errorf("relay.Run did not return within %v of its context's end", waitTimeout)
			}
			h.spool.OnEnqueue = nil
		})
	}
	h.t.Cleanup(h.stop)
	return h.relay
}

// send enqueues a message as a submission would and returns its queue ID.
func (h *harness) send(from string, to []string, subject string) string {
	h.t.Helper()
	return h.sendBody(from, to, subject, "Hello,\r\n\r\nthis is the body of "+subject+".\r\n")
}

func (h *harness) sendBody(from string, to []string, subject, body string) string {
	h.t.Helper()
	id := spool.NewID()
	hdrFrom := from
	if hdrFrom == "" {
		hdrFrom = "MAILER-DAEMON@sluice.test"
	}
	msg := fmt.Sprintf("From: <%s>\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@sluice.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s",
		hdrFrom, "<"+strings.Join(to, ">, <")+">", subject, time.Now().Format(time.RFC1123Z), strings.ToLower(id), body)
	env := &spool.Envelope{ID: id, Login: from, From: from, To: to, ClientIP: "127.0.0.1", Received: time.Now()}
	if err := h.spool.Enqueue(env, []byte(msg)); err != nil {
		h.t.Fatal(err)
	}
	return id
}

// queued lists the spool.
func (h *harness) queued() []string {
	h.t.Helper()
	ids, err := h.spool.List()
	if err != nil {
		h.t.Fatal(err)
	}
	return ids
}

// waitEmpty waits until the queue is empty (every message delivered,
// bounced or dropped, and every DSN delivered too), and checks that no
// state file is left behind (Remove deletes the message, then its state:
// the directory gets a moment to follow).
func (h *harness) waitEmpty() {
	h.t.Helper()
	eventually(h.t, "an empty queue", func() bool { return len(h.queued()) == 0 })
	dir := filepath.Join(h.dir, "spool", "queue")
	var left []os.DirEntry
	deadline := time.Now().Add(waitTimeout)
	for {
		var err error
		left, err = os.ReadDir(dir)
		if err != nil {
			h.t.Fatal(err)
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, e := range left {
		h.t.Errorf("left in the queue directory: %s", e.Name())
	}
}

// state reads the delivery state of a queued message.
func (h *harness) state(id string) *spool.State {
	h.t.Helper()
	env, _, err := h.spool.Read(id)
	if err != nil {
		h.t.Fatalf("message %s: %v", id, err)
	}
	st, err := h.spool.LoadState(id, env)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// ---------------------------------------------------------------------------
// Outcomes and logs

type result struct {
	id, rcpt, status, category string
}

type resultLog struct {
	mu   sync.Mutex
	list []result
}

func (l *resultLog) add(env *spool.Envelope, rcpt, status, category string, _ time.Duration) {
	id := env.ID
	l.mu.Lock()
	l.list = append(l.list, result{id, rcpt, status, category})
	l.mu.Unlock()
}

// of returns the outcomes of rcpt in message id, in order.
func (l *resultLog) of(id, rcpt string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.list {
		if r.id == id && r.rcpt == rcpt {
			out = append(out, r.status)
		}
	}
	return out
}

func (l *resultLog) forID(id string) []result {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []result
	for _, r := range l.list {
		if r.id == id {
			out = append(out, r)
		}
	}
	return out
}

// logRecorder is a slog.Handler keeping every record as flat attributes.
type logRecorder struct {
	mu      sync.Mutex
	records []logRecord
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	l.mu.Lock()
	l.records = append(l.records, rec)
	l.mu.Unlock()
	return nil
}

// find returns the records with message msg whose attributes include want.
func (l *logRecorder) find(msg string, want map[string]string) []logRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRecord
next:
	for _, r := range l.records {
		if r.msg != msg {
			continue
		}
		for k, v := range want {
			if r.attrs[k] != v {
				continue next
			}
		}
		out = append(out, r)
	}
	return out
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, r := range l.records {
		fmt.Fprintf(&b, "%s %q", r.level, r.msg)
		for k, v := range r.attrs {
			fmt.Fprintf(&b, " %s=%q", k, v)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
