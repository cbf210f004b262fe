package submit

import (
	"context"
	"time"
)

// rejectAll is an Authenticator that knows nobody: the fuzzers exercise the
// SASL parsers, not a backend.
type rejectAll struct{}

func (rejectAll) Authenticate(context.Context, string, string) (*Login, error) {
	return nil, ErrBadCredentials
}

func fuzzServer() *Server {
	srv := &Server{Hostname: "fuzz.test", Auth: rejectAll{},
		Guard: NewMemoryGuard(GuardLimits{PerLogin: 1 << 30, PerIP: 1 << 30, Window: time.Minute, Lockout: time.Minute})}
	srv.init()
	return srv
}
