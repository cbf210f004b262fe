// Package submit is Sluice's submission service: the SMTP session a mail
// client, a WordPress plugin or a hosting platform talks to.
//
// It runs TLS first (implicit TLS on the submission-over-TLS port, STARTTLS
// on the submission port), offers AUTH PLAIN and LOGIN only over TLS, lets a
// login send only as an address it owns, enforces the limits a client
// controls, and puts an accepted message on disk before it answers 250. It
// declares the small interfaces it needs (Authenticator, FailureGuard,
// Spooler) and knows nothing of how they are implemented.
package submit

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"sluice/relay/spool"
)

// Spooler stores an accepted message durably; see relay/spool.
type Spooler interface {
	Enqueue(env *spool.Envelope, parts ...[]byte) error
}

// QuotaGate is what submit needs from the quota rule (screen.Quota):
// capacity reserved at RCPT, charged at acceptance, released when the
// message is refused or abandoned, refunded if it could not be queued.
// Errors that carry an SMTP reply (SMTPReply method) reach the client as
// they are.
type QuotaGate interface {
	Reserve(ctx context.Context, login string, override *int, txn string, n int) error
	Commit(ctx context.Context, login string, override *int, txn, id string, n int) error
	Release(ctx context.Context, login string, override *int, txn string)
	Refund(ctx context.Context, login string, override *int, id string, n int)
}

// Signer DKIM-signs an accepted message (dkim.Keyring with the configured
// fallback). It returns the DKIM-Signature fields to put in front of the
// message parts, and a short description for the log ("signed as d (rsa)",
// "unsigned").
type Signer interface {
	Sign(fromDomain string, parts ...[]byte) (fields []byte, outcome string, err error)
}

// SenderCheck judges the sender domain's DNS before relaying (see
// dkim/dnscheck.Precheck): mail that receivers would reject for SPF or
// DMARC is refused at DATA with the record to fix.
type SenderCheck interface {
	CheckSender(ctx context.Context, fromDomain, envelopeFrom string) error
}

// Screener runs the content rules (screen.Pipeline.ScreenMessageHeaders). It
// returns a hold reason for a message to accept but keep from delivery, or
// an error that carries the reply (SMTPReply) for one to refuse or defer.
type Screener interface {
	// headers are fields to put in front of the message before signing
	// (e.g. X-Spam: Yes from Rspamd's "add header").
	ScreenMessageHeaders(ctx context.Context, login, ourHost, envFrom string, rcpts []string, raw []byte, smtputf8 bool) (hold string, headers []byte, err error)
}

// ScreenCommitter is a Screener that can also charge the message's quota
// (QuotaGate.Commit of the session's transaction txn, as message id, for
// every recipient) in the same round trip as its own counting
// (screen.Pipeline.ScreenAndCommit). committed reports whether it did;
// if not, Data commits as usual.
type ScreenCommitter interface {
	ScreenAndCommit(ctx context.Context, login, ourHost, envFrom string, rcpts []string, raw []byte, smtputf8 bool,
		override *int, txn, id string) (hold string, headers []byte, committed bool, err error)
}

// Suspensions is what AUTH asks of the suspension store every instance
// shares (in Redis, or a local file for one instance): whether the
// compromise rule suspended a login, whatever backend holds it. When it
// is set, a login the backend reports disabled with the rule's reason
// ("suspended for suspected abuse: ...") is judged by it too, since an
// operator may have lifted that suspension on another instance. Errors
// follow on_store_error (AllowOnGuardError).
type Suspensions interface {
	// Suspended returns the reason the login is suspended, or "".
	Suspended(ctx context.Context, login string) (reason string, err error)
}

// Observer is told of what the session sees, for metrics. Calls must be
// cheap and safe for concurrent use.
type Observer interface {
	Connection(listener string, accepted bool)
	Auth(mechanism, result string)
	Message(verdict, stage string)
	// Held is told of each message accepted into the held state.
	Held(id, login, reason string)
}

type noObserver struct{}

func (noObserver) Connection(string, bool)     {}
func (noObserver) Auth(string, string)         {}
func (noObserver) Message(string, string)      {}
func (noObserver) Held(string, string, string) {}

// Limits are the bounds on what a client controls.
type Limits struct {
	MaxMessageSize      int64
	MaxRecipients       int
	MaxConnections      int // 0: no limit
	MaxConnectionsPerIP int // 0: no limit
	// MaxCommandErrors is how many bad commands (replies 500-504: unknown
	// or malformed commands, bad arguments, wrong order) a connection may
	// send, before TLS and after it together; the last one is answered,
	// then "421 4.7.0" and the connection closes. 0 means the default,
	// 10. go-smtp also ends a session after its 4th unrecognized or
	// unparsable command line, whatever this is (its errThreshold is
	// fixed); the reply is the same 421.
	MaxCommandErrors int
	IdleTimeout      time.Duration
	DataTimeout      time.Duration
}

// DefaultLimits are the embedded defaults.
var DefaultLimits = Limits{
	MaxMessageSize:      25 << 20,
	MaxRecipients:       100,
	MaxConnections:      10000,
	MaxConnectionsPerIP: 100,
	MaxCommandErrors:    10,
	IdleTimeout:         5 * time.Minute,
	DataTimeout:         3 * time.Minute,
}

// Server is the submission service. Set its fields, then call Serve for
// each listener. Shutdown stops it.
type Server struct {
	Hostname  string
	TLSConfig *tls.Config
	Auth      Authenticator
	Guard     FailureGuard
	Spool     Spooler
	Quota     QuotaGate   // nil: no quotas
	Signer    Signer      // nil: no DKIM signing
	Precheck  SenderCheck // nil: no DNS pre-check
	Screen    Screener    // nil: no content rules
	Observer  Observer    // nil: none
	// Backlog, when set, is how many accepted messages wait for their
	// first delivery attempt (relay.Relay.Backlog). Past InFlowLimit, a
	// new transaction's MAIL is answered only once it is back under, or
	// after InFlowDelay: clients then send no faster than mail goes out,
	// and the spool stops growing (Postfix's in_flow_delay). 0 delay: off.
	Backlog     func() int
	InFlowLimit int
	InFlowDelay time.Duration
	// Suspensions is asked after each successful password check (a
	// round trip of its own, unless the Guard is a SuspensionPrefetcher
	// that read it with the lockout check); nil: only Login.Disabled
	// counts.
	Suspensions Suspensions
	// ProxyTrusted, when set, makes every listener accept the PROXY
	// protocol (v1 and v2) from these networks (load balancers), so that
	// limits and logs see the real client; a PROXY header from anywhere
	// else drops the connection.
	ProxyTrusted []*net.IPNet
	// AbuseContact is whom a suspended login is told to contact
	// (default postmaster@Hostname).
	AbuseContact string
	// AllowOnGuardError lets a login go on as not locked out (or not
	// suspended) when the Guard's (or Suspensions') store cannot answer
	// (on_store_error = "allow"); the failure is logged and counted
	// (GuardStoreErrors). Otherwise the login gets 451 4.3.0.
	AllowOnGuardError bool
	Logger            *slog.Logger
	Limits            Limits

	once        sync.Once
	smtp        *smtp.Server
	tlsConf     *tls.Config // TLSConfig with TLS 1.2 at least
	replies     *replyTable
	localKey    []byte // fingerprint key when the guard cannot give its own
	conns       *connLimiter
	guardErrors atomic.Int64
	inFlowWaits atomic.Int64

	mu        sync.Mutex
	state     int // stateServing, stateShutdown, stateClosed
	listeners map[*limitListener]struct{}
	live      map[*liveConn]struct{}
	active    int           // accept loops and open connections
	idle      chan struct{} // closed when active drops to 0, if waited for
}

const (
	stateServing = iota
	stateShutdown
	stateClosed
)

func (srv *Server) init() {
	srv.once.Do(func() {
		if srv.Logger == nil {
			srv.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
		if srv.Observer == nil {
			srv.Observer = noObserver{}
		}
		if srv.Guard == nil {
			srv.Guard = NewMemoryGuard(GuardLimits{PerLogin: 10, PerIP: 30, Window: 15 * time.Minute, Lockout: 15 * time.Minute})
		}
		if srv.TLSConfig != nil {
			srv.tlsConf = srv.TLSConfig.Clone()
			if srv.tlsConf.MinVersion < tls.VersionTLS12 {
				srv.tlsConf.MinVersion = tls.VersionTLS12
			}
		}
		s := smtp.NewServer(smtp.BackendFunc(srv.newSession))
		s.Domain = srv.Hostname
		// go-smtp gets connections that are in TLS already (see wireConn)
		// and must never offer STARTTLS itself.
		s.TLSConfig = nil
		// Sluice decides itself when AUTH is allowed (only over TLS) so that
		// the refusal can say how to fix it.
		s.AllowInsecureAuth = true
		s.MaxMessageBytes = srv.Limits.MaxMessageSize
		s.MaxLineLength = maxCommandLine
		s.ReadTimeout = srv.Limits.IdleTimeout
		s.WriteTimeout = time.Minute
		s.EnableSMTPUTF8 = true
		s.ErrorLog = slogPrinter{srv.Logger}
		srv.smtp = s
		srv.replies = newReplyTable(srv.Hostname, srv.Limits)
		srv.localKey = randomKey()
		srv.conns = newConnLimiter(srv.Limits.MaxConnections, srv.Limits.MaxConnectionsPerIP)
		srv.listeners = map[*limitListener]struct{}{}
		srv.live = map[*liveConn]struct{}{}
	})
}

func (srv *Server) maxCommandErrors() int {
	if n := srv.Limits.MaxCommandErrors; n > 0 {
		return n
	}
	return DefaultLimits.MaxCommandErrors
}

// Serve accepts connections on l until Shutdown or Close, and closes l.
// With implicitTLS the listener speaks TLS from the first byte (port 465,
// RFC 8314); otherwise clients must use STARTTLS before AUTH.
func (srv *Server) Serve(l net.Listener, implicitTLS bool) error {
	srv.init()
	if srv.ProxyTrusted != nil {
		l = proxyListener(l, srv.ProxyTrusted)
	}
	kind := "submission"
	if implicitTLS {
		kind = "submissions"
	}
	ll := &limitListener{Listener: l, srv: srv, implicit: implicitTLS, kind: kind,
		ready: make(chan net.Conn), done: make(chan struct{})}
	srv.mu.Lock()
	if srv.state != stateServing {
		srv.mu.Unlock()
		l.Close()
		return smtp.ErrServerClosed
	}
	srv.listeners[ll] = struct{}{}
	srv.active++ // the accept loop
	srv.mu.Unlock()
	go ll.acceptLoop()
	err := srv.smtp.Serve(ll)
	ll.Close()
	srv.mu.Lock()
	delete(srv.listeners, ll)
	srv.mu.Unlock()
	if err == nil || errors.Is(err, net.ErrClosed) {
		return smtp.ErrServerClosed
	}
	return err
}

// Shutdown stops accepting and waits until every open session has ended,
// those still before STARTTLS included (they may go on into TLS and send),
// or until ctx is done; then Close ends the rest. It may be called again.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.init()
	srv.mu.Lock()
	if srv.state == stateClosed {
		srv.mu.Unlock()
		return smtp.ErrServerClosed
	}
	srv.state = stateShutdown
	ls := srv.listenerList()
	srv.mu.Unlock()
	for _, l := range ls {
		l.stop()
	}
	if err := srv.waitIdle(ctx); err != nil {
		return err
	}
	err := srv.smtp.Shutdown(ctx)
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil // an earlier Shutdown got this far
	}
	return err
}

// Close closes all listeners and connections at once.
func (srv *Server) Close() error {
	srv.init()
	srv.mu.Lock()
	srv.state = stateClosed
	ls := srv.listenerList()
	conns := make([]*liveConn, 0, len(srv.live))
	for c := range srv.live {
		conns = append(conns, c)
	}
	srv.mu.Unlock()
	for _, l := range ls {
		l.stop()
	}
	for _, c := range conns {
		c.Close()
	}
	return srv.smtp.Close()
}

func (srv *Server) listenerList() []*limitListener {
	ls := make([]*limitListener, 0, len(srv.listeners))
	for l := range srv.listeners {
		ls = append(ls, l)
	}
	return ls
}

// waitIdle waits until no accept loop runs and no connection is open.
func (srv *Server) waitIdle(ctx context.Context) error {
	srv.mu.Lock()
	if srv.active == 0 {
		srv.mu.Unlock()
		return nil
	}
	if srv.idle == nil {
		srv.idle = make(chan struct{})
	}
	idle := srv.idle
	srv.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (srv *Server) abuseContact() string {
	if srv.AbuseContact != "" {
		return srv.AbuseContact
	}
	return "postmaster@" + srv.Hostname
}

func (srv *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	s := &session{srv: srv, conn: c, helo: c.Hostname(), ip: remoteIP(c.Conn().RemoteAddr())}
	s.wire, _ = c.Conn().(*wireConn)
	return s, nil
}

func remoteIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
