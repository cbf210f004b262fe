package submit

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Mechanisms offered after TLS. No CRAM-MD5: it needs the clear-text password
// on the server, and PHPMailer picks it first when offered.
var mechanisms = []string{sasl.Plain, sasl.Login}

// AuthMechanisms implements smtp.AuthSession.
func (s *session) AuthMechanisms() []string {
	if !s.tls {
		return nil
	}
	return mechanisms
}

// Auth implements smtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if !s.tls {
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
		p.done = false
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
	if until, locked, err := srv.Guard.Locked(ctx, user, s.ip); err != nil {
		srv.Logger.Error("lockout store unavailable", "err", err)
		return errTempFailure
	} else if locked {
		srv.logAuth(s, mech, user, "locked-out")
		return s.closeWith(errLockedOut(user, until))
	}
	login, err := srv.Auth.Authenticate(ctx, user, pass)
	switch {
	case errors.Is(err, ErrBadCredentials):
		fp := srv.fingerprints.of(user, pass)
		until, locked, gerr := srv.Guard.Failed(ctx, user, s.ip, fp)
		if gerr != nil {
			srv.Logger.Error("lockout store unavailable", "err", gerr)
		}
		if locked {
			srv.logAuth(s, mech, user, "failed-locked-out")
			return s.closeWith(errLockedOut(user, until))
		}
		srv.logAuth(s, mech, user, "failed")
		return errAuthFailed
	case err != nil:
		srv.Logger.Error("authentication backend unavailable", "login", user, "err", err)
		srv.logAuth(s, mech, user, "backend-error")
		return reply(454, ecTempPolicy, "temporary authentication failure, try again in a few minutes")
	}
	if login.Disabled {
		srv.logAuth(s, mech, user, "disabled")
		return errDisabled(login, srv.abuseContact())
	}
	s.login = login
	srv.logAuth(s, mech, user, "ok")
	return nil
}

func (srv *Server) logAuth(s *session, mech, user, result string) {
	level := slog.LevelInfo
	if result != "ok" {
		level = slog.LevelWarn
	}
	srv.Logger.Log(context.Background(), level, "auth", "mechanism", mech, "login", user, "ip", s.ip, "result", result)
	srv.Observer.Auth(mech, result)
}

var _ smtp.AuthSession = (*session)(nil)
