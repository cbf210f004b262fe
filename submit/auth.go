package submit

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Mechanisms offered after TLS. No CRAM-MD5: it needs the clear-text password
// on the server, and PHPMailer picks it first when offered.
var mechanisms = []string{sasl.Plain, sasl.Login}

// AuthMechanisms implements smtp.AuthSession. go-smtp is only handed
// connections inside TLS (wireConn); the checks here keep it that way.
func (s *session) AuthMechanisms() []string {
	if s.wire == nil {
		return nil
	}
	return mechanisms
}

// Auth implements smtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.wire == nil {
		return nil, errAuthNeedsTLS
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return &plainServer{s: s}, nil
	case sasl.Login:
		return &loginServer{s: s}, nil
	}
	return nil, errAuthMechanism
}

// plainServer is the server side of SASL PLAIN (RFC 4616). The
// authorization identity must be empty or equal to the username: Sluice has
// no notion of acting for another user.
type plainServer struct {
	s    *session
	done bool
}

func (p *plainServer) Next(response []byte) ([]byte, bool, error) {
	if p.done {
		return nil, false, errAuthMalformed
	}
	if response == nil {
		// No initial response: ask for it with an empty challenge.
		return []byte{}, false, nil
	}
	p.done = true
	parts := bytes.Split(response, []byte{0})
	if len(parts) != 3 {
		return nil, false, errAuthMalformed
	}
	authzid, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if authzid != "" && authzid != user {
		p.s.srv.logAuth(p.s, sasl.Plain, user, "authzid-mismatch")
		return nil, false, errAuthzid
	}
	return nil, true, p.s.authenticate(sasl.Plain, user, pass)
}

// loginServer is the server side of the obsolete but ubiquitous LOGIN
// mechanism (draft-murchison-sasl-login): the server asks "Username:" then
// "Password:", each answer base64-encoded by the SMTP layer.
type loginServer struct {
	s    *session
	step int
	user string
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if len(response) > 0 {
			// Initial response carries the username (RFC 4954 allows it).
			l.user = string(response)
			l.step = 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(response)
		l.step = 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.s.authenticate(sasl.Login, l.user, string(response))
	}
	return nil, false, errAuthMalformed
}

// authenticate checks the credentials against the lockout guard and the
// backend, and on success binds the login to the session.
func (s *session) authenticate(mech, user, pass string) error {
	ctx := context.Background()
	srv := s.srv
	user = strings.ToLower(strings.TrimSpace(user))
	if len(user) > 320 || len(pass) > 1024 || user == "" {
		srv.logAuth(s, mech, user, "malformed")
		return errAuthFailed
	}
	lu, iu, susp, err := srv.locked(ctx, user, s.ip)
	if err != nil {
		if !srv.storeError(s, user, "lockout", "lockout check", "not locked", err) {
			srv.logAuth(s, mech, user, "store-error")
			return errTempFailure
		}
	} else if lock := newLockout(lu, iu); lock.active() {
		srv.logAuth(s, mech, user, "locked-out")
		return s.closeWith(errLockedOut(lock, user, s.ip))
	}
	login, err := srv.Auth.Authenticate(ctx, user, pass)
	switch {
	case errors.Is(err, ErrBadCredentials):
		lu, iu, gerr := srv.Guard.Failed(ctx, user, s.ip, srv.fingerprint(ctx, s, user, pass))
		if gerr != nil {
			// The password was wrong either way: 535 whatever
			// on_store_error says; only the count is lost.
			srv.guardErrors.Add(1)
			srv.Logger.Error("lockout store unavailable; this failed login was not counted",
				"op", "failure count", "login", user, "ip", s.ip, "err", gerr)
		}
		if lock := newLockout(lu, iu); lock.active() {
			srv.logAuth(s, mech, user, "failed-locked-out")
			return s.closeWith(errLockedOut(lock, user, s.ip))
		}
		srv.logAuth(s, mech, user, "failed")
		return errAuthFailed
	case err != nil:
		srv.Logger.Error("authentication backend unavailable", "login", user, "err", err)
		srv.logAuth(s, mech, user, "backend-error")
		return errAuthBackend
	}
	if login.Disabled && !(srv.Suspensions != nil && login.Suspended) {
		srv.logAuth(s, mech, user, "disabled")
		return errDisabled(login, srv.abuseContact())
	}
	if susp != nil {
		// Suspended by the compromise rule on any instance, for a login of
		// any backend: the same reply as a suspended login of the file.
		// Suspensions also judges a suspension the user file holds: it
		// may have been lifted on another instance.
		reason, err := susp.Suspended(ctx, login.Name)
		switch {
		case err != nil:
			if !srv.storeError(s, user, "suspension", "suspension check", "not suspended", err) {
				srv.logAuth(s, mech, user, "store-error")
				return errTempFailure
			}
		case reason != "":
			srv.logAuth(s, mech, user, "disabled")
			return errDisabled(&Login{Name: login.Name, Disabled: true, DisabledReason: reason}, srv.abuseContact())
		}
	}
	s.login = login
	srv.logAuth(s, mech, user, "ok")
	return nil
}

// locked asks the Guard whether user or ip is locked out. susp is the
// Suspensions to ask after a right password: with a SuspensionPrefetcher
// guard, one that answers from what it read in the same round trip.
func (srv *Server) locked(ctx context.Context, user, ip string) (loginUntil, ipUntil time.Time, susp Suspensions, err error) {
	susp = srv.Suspensions
	p, ok := srv.Guard.(SuspensionPrefetcher)
	if !ok || susp == nil {
		loginUntil, ipUntil, err = srv.Guard.Locked(ctx, user, ip)
		return loginUntil, ipUntil, susp, err
	}
	loginUntil, ipUntil, pre, err := p.LockedPrefetch(ctx, user, ip)
	if pre != nil {
		susp = pre
	}
	return loginUntil, ipUntil, susp, err
}

// storeError logs and counts a failure of a store AUTH asks before it
// lets a login in (store: "lockout", "suspension") and reports whether the
// login may go on as asIf (on_store_error = "allow").
func (srv *Server) storeError(s *session, user, store, what, asIf string, err error) (allowed bool) {
	srv.guardErrors.Add(1)
	if srv.AllowOnGuardError {
		srv.Logger.Warn(store+" store unavailable; going on as "+asIf+" (on_store_error = allow)",
			"op", what, "login", user, "ip", s.ip, "err", err)
		return true
	}
	srv.Logger.Error(store+" store unavailable; login refused with 451 4.3.0 (on_store_error = tempfail)",
		"op", what, "login", user, "ip", s.ip, "err", err)
	return false
}

// fingerprint keys the wrong password's fingerprint with the guard's
// shared key; if the guard cannot give it, with this process's key (the
// guard's store is then down too, so the count is lost either way).
func (srv *Server) fingerprint(ctx context.Context, s *session, user, pass string) string {
	key, err := srv.Guard.FingerprintKey(ctx)
	if err != nil || len(key) == 0 {
		srv.Logger.Warn("password fingerprint key unavailable; using this process's own", "login", user, "ip", s.ip, "err", err)
		key = srv.localKey
	}
	return fingerprint(key, user, pass)
}

// GuardStoreErrors counts the failures of the lockout and suspension
// stores seen at AUTH (for metrics).
func (srv *Server) GuardStoreErrors() int64 { return srv.guardErrors.Load() }

func (srv *Server) logAuth(s *session, mech, user, result string) {
	level := slog.LevelInfo
	if result != "ok" {
		level = slog.LevelWarn
	}
	srv.Logger.Log(context.Background(), level, "auth", "mechanism", mech, "login", user, "ip", s.ip, "result", result)
	srv.Observer.Auth(mech, result)
}

var _ smtp.AuthSession = (*session)(nil)
