package submit

import (
	"context"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"sluice/relay/spool"
)

// session is one client connection after EHLO. go-smtp calls its methods in
// order, one at a time, except that Data runs beside the connection's
// goroutine during BDAT (see Data).
type session struct {
	srv   *Server
	conn  *smtp.Conn
	wire  *wireConn // the connection under go-smtp, always in TLS (nil only in fuzz tests)
	ip    string
	helo  string
	login *Login

	from     string
	rcpts    []string
	utf8     bool   // MAIL FROM had SMTPUTF8
	txn      string // quota reservation handle of this transaction
	reserved bool   // txn holds a reservation to give back
}

// Reset implements smtp.Session.
func (s *session) Reset() {
	s.release()
	s.from = ""
	s.rcpts = s.rcpts[:0]
}

// Logout implements smtp.Session: a dropped connection gives back what it
// reserved.
func (s *session) Logout() error {
	s.release()
	return nil
}

func (s *session) release() {
	if s.reserved && s.srv.Quota != nil && s.login != nil {
		s.srv.Quota.Release(context.Background(), s.login.Name, s.login.Quota, s.txn)
	}
	s.reserved = false
}

// Mail implements smtp.Session.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.login == nil {
		return errAuthRequired
	}
	if from == "" {
		return errNullSender
	}
	if len(from) > 320 || strings.LastIndexByte(from, '@') <= 0 {
		return errSenderSyntax
	}
	if !s.login.Owns(from) {
		s.srv.Logger.Warn("sender refused", "login", s.login.Name, "sender", from, "ip", s.ip)
		return errSenderNotOwned(from, s.login.Name)
	}
	if opts != nil && opts.Size > s.srv.Limits.MaxMessageSize {
		return errDeclaredTooBig(s.srv.Limits.MaxMessageSize)
	}
	s.srv.inFlow()
	s.from = from
	s.utf8 = opts != nil && opts.UTF8
	s.txn = spool.NewID()
	return nil
}

// inFlow holds a new transaction back, at most InFlowDelay, while the
// delivery backlog is over InFlowLimit.
func (srv *Server) inFlow() {
	if srv.Backlog == nil || srv.InFlowDelay <= 0 || srv.Backlog() <= srv.InFlowLimit {
		return
	}
	srv.inFlowWaits.Add(1)
	for end := time.Now().Add(srv.InFlowDelay); time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
		if srv.Backlog() <= srv.InFlowLimit {
			return
		}
	}
}

// InFlowWaits counts the transactions held back by the in-flow delay.
func (srv *Server) InFlowWaits() int64 { return srv.inFlowWaits.Load() }

// Rcpt implements smtp.Session.
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.login == nil {
		return errAuthRequired
	}
	if len(s.rcpts) >= s.srv.Limits.MaxRecipients {
		return errTooManyRecipients(s.srv.Limits.MaxRecipients)
	}
	at := strings.LastIndexByte(to, '@')
	if len(to) > 320 || at <= 0 || at == len(to)-1 || strings.ContainsAny(to[at+1:], " \t") {
		return errRcptSyntax
	}
	if q := s.srv.Quota; q != nil {
		// Set first: a reservation whose answer was lost (a store error)
		// may still be held, and the release gives it back.
		s.reserved = true
		if err := q.Reserve(context.Background(), s.login.Name, s.login.Quota, s.txn, 1); err != nil {
			return toReply(err)
		}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}
