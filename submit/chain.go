package submit

import (
	"context"
	"errors"
)

// Chain asks several login backends in order (the user file, a hosting
// panel's database, Dovecot): the first that knows the login and accepts
// the password wins. If none accepts and one of them could not answer,
// the result is that backend's error (a temporary failure: 454 4.7.0),
// never "wrong password", since the login might be right.
type Chain []Authenticator

// Authenticate implements Authenticator.
func (c Chain) Authenticate(ctx context.Context, username, password string) (*Login, error) {
	var unavailable error
	for _, b := range c {
		l, err := b.Authenticate(ctx, username, password)
		switch {
		case err == nil:
			return l, nil
		case errors.Is(err, ErrBadCredentials):
		default:
			if unavailable == nil {
				unavailable = err
			}
		}
	}
	if unavailable != nil {
		return nil, unavailable
	}
	return nil, ErrBadCredentials
}
