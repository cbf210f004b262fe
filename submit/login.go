package submit

import (
	"context"
	"errors"
	"strings"
)

// Login is an authenticated mailbox: who logged in and what it may send as.
type Login struct {
	// Name is the username, a mailbox address, lower-cased.
	Name string
	// Grants are further addresses ("a@example.com") and whole domains
	// ("@example.com") the login may use as sender.
	Grants []string
	// Quota is the login's own hourly limit in recipients; nil means the
	// domain's or the default limit, 0 unlimited.
	Quota *int
	// Disabled logins cannot send.
	Disabled bool
	// DisabledReason says why (e.g. "suspended for suspected abuse: ...").
	DisabledReason string
	// Suspended marks a Disabled login that the content screen's
	// compromise rule suspended (not an operator or a panel). With a
	// Suspensions store, AUTH lets that store judge it, since the
	// suspension may have been lifted on another instance.
	Suspended bool
}

// Authenticator checks a username and password. It is the small interface
// behind which the user file, SQL or Dovecot backends live.
type Authenticator interface {
	// Authenticate returns the login when the password is right (even if the
	// login is disabled: the caller tells the user so), ErrBadCredentials
	// when the user is unknown or the password wrong, or another error when
	// the backend cannot answer now.
	Authenticate(ctx context.Context, username, password string) (*Login, error)
}

// ErrBadCredentials is returned by an Authenticator for an unknown user or a
// wrong password; the two are not told apart.
var ErrBadCredentials = errors.New("bad credentials")

// Owns reports whether the login may use addr as a sender address. Local
// parts are compared as given, domains case-insensitively; the whole address
// is compared case-insensitively since mailbox providers treat it so.
func (l *Login) Owns(addr string) bool {
	addr = strings.ToLower(strings.TrimSpace(addr))
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return false
	}
	if addr == l.Name {
		return true
	}
	domain := addr[at:]
	for _, g := range l.Grants {
		if g == addr || g == domain {
			return true
		}
	}
	return false
}
