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

// Screener runs the content rules (screen.Pipeline.ScreenMessage). It
// returns a hold reason for a message to accept but keep from delivery, or
// an error that carries the reply (SMTPReply) for one to refuse or defer.
type Screener interface {
	ScreenMessage(ctx context.Context, login, ourHost, envFrom string, rcpts []string, raw []byte, smtputf8 bool) (hold string, err error)
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
	MaxConnections      int
	MaxConnectionsPerIP int
	MaxCommandErrors    int
	IdleTimeout         time.Duration
	DataTimeout         time.Duration
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
	// ProxyTrusted, when set, makes every listener accept the PROXY
	// protocol (v1 and v2) from these networks (load balancers), so that
	// limits and logs see the real client; a PROXY header from anywhere
	// else drops the connection.
	ProxyTrusted []*net.IPNet
	// AbuseContact is whom a suspended login is told to contact
	// (default postmaster@Hostname).
	AbuseContact string
	Logger       *slog.Logger
	Limits       Limits

	once         sync.Once
	smtp         *smtp.Server
	fingerprints *fingerprinter
	conns        *connLimiter
}

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
		s := smtp.NewServer(smtp.BackendFunc(srv.newSession))
		s.Domain = srv.Hostname
		s.TLSConfig = srv.TLSConfig
		// Sluice decides itself when AUTH is allowed (only over TLS) so that
		// the refusal can say how to fix it.
		s.AllowInsecureAuth = true
		s.MaxMessageBytes = srv.Limits.MaxMessageSize
		s.MaxLineLength = 4000
		s.ReadTimeout = srv.Limits.IdleTimeout
		s.WriteTimeout = time.Minute
		s.EnableSMTPUTF8 = true
		s.ErrorLog = slogPrinter{srv.Logger}
		srv.smtp = s
		srv.fingerprints = newFingerprinter()
		srv.conns = newConnLimiter(srv.Limits.MaxConnections, srv.Limits.MaxConnectionsPerIP)
	})
}

// Serve accepts connections on l until Shutdown. With implicitTLS the
// listener speaks TLS from the first byte (port 465, RFC 8314); otherwise
// clients must use STARTTLS before AUTH.
func (srv *Server) Serve(l net.Listener, implicitTLS bool) error {
	srv.init()
	if srv.ProxyTrusted != nil {
		l = proxyListener(l, srv.ProxyTrusted)
	}
	kind := "submission"
	if implicitTLS {
		kind = "submissions"
	}
	ll := &limitListener{Listener: l, limiter: srv.conns, logger: srv.Logger, observer: srv.Observer, kind: kind}
	var inner net.Listener = ll
	if implicitTLS {
		ll.tlsConfig = srv.TLSConfig
		inner = tls.NewListener(ll, srv.TLSConfig)
	}
	err := srv.smtp.Serve(inner)
	if err == nil || errors.Is(err, net.ErrClosed) {
		return smtp.ErrServerClosed
	}
	return err
}

// Shutdown stops accepting and waits for open sessions to end until ctx is
// done, then closes them.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.init()
	return srv.smtp.Shutdown(ctx)
}

// Close closes all listeners and connections at once.
func (srv *Server) Close() error {
	srv.init()
	return srv.smtp.Close()
}

func (srv *Server) abuseContact() string {
	if srv.AbuseContact != "" {
		return srv.AbuseContact
	}
	return "postmaster@" + srv.Hostname
}

func (srv *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	s := &session{srv: srv, conn: c, helo: c.Hostname(), tls: isTLS, ip: remoteIP(c.Conn().RemoteAddr())}
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

type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.l.Debug("smtp", "detail", sprintf(format, v...))
}
func (p slogPrinter) Println(v ...any) { p.l.Debug("smtp", "detail", sprint(v...)) }
