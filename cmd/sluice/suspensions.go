package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/screen"
	"sluice/submit/userdb"
)

// suspensionStore is what the wiring (suspender, authSuspensions), `sluice
// user` and the admin API need of a suspension store
// (screen.RedisSuspensions, screen.FileSuspensions).
type suspensionStore interface {
	Record(ctx context.Context, login, reason string) (new bool, err error)
	State(ctx context.Context, login string) (sus *screen.Suspension, liftedAt time.Time, err error)
	Lift(ctx context.Context, login string) (lifted bool, err error)
}

// suspensionsPath is the local suspension file of an instance without Redis.
func suspensionsPath(cfg *Config) string { return filepath.Join(cfg.DataDir, "suspended.json") }

// newSuspensions is the suspension store: in Redis when rdb is set (every
// instance refuses a login one of them suspended), else the instance's
// data_dir/suspended.json.
func newSuspensions(cfg *Config, rdb redis.UniversalClient) suspensionStore {
	if rdb == nil {
		return screen.OpenFileSuspensions(suspensionsPath(cfg), 0)
	}
	return screen.NewRedisSuspensions(rdb, 0)
}

// openSuspensions is the suspension store of cfg for the CLI. close
// releases it.
func openSuspensions(cfg *Config) (store suspensionStore, close func(), err error) {
	if cfg.Quota.RedisURL == "" {
		return newSuspensions(cfg, nil), func() {}, nil
	}
	rdb, err := screen.NewRedisClient(cfg.Quota.RedisURL, cfg.Quota.Timeout.Duration)
	if err != nil {
		return nil, nil, err
	}
	return newSuspensions(cfg, rdb), func() { rdb.Close() }, nil
}

// sharedStore reports whether store is shared by every instance (Redis).
func sharedStore(store suspensionStore) bool {
	_, ok := store.(*screen.RedisSuspensions)
	return ok
}

// storeWhere says where store keeps a suspension, for `sluice user`.
func storeWhere(store suspensionStore) string {
	if f, ok := store.(*screen.FileSuspensions); ok {
		return "in " + f.Path()
	}
	return "on every instance (Redis)"
}

// ruleSuspended reports whether the user file disables u (nil: not in the
// file) for the compromise rule's suspension, not for an operator's or a
// panel's reason.
func ruleSuspended(u *userdb.User) bool {
	return u != nil && u.Disabled && u.Suspended
}

// liftedElsewhere reports whether the user file still holds a suspension
// of u that the store (State's sus and liftedAt) says an operator lifted,
// through another instance or the admin API. The file catches up at the
// login's next AUTH (authSuspensions).
func liftedElsewhere(u *userdb.User, sus *screen.Suspension, liftedAt time.Time) bool {
	return sus == nil && !liftedAt.IsZero() && ruleSuspended(u)
}

// enableInFile enables login in the user file if it is disabled there for
// the compromise rule's suspension or, with anyReason, for any reason.
// Nothing is written when there is nothing to change, so a read-only user
// file (a Kubernetes Secret) does not stop a lift. enabled reports whether
// the file changed.
func enableInFile(db *userdb.File, login string, anyReason bool) (enabled bool, err error) {
	wanted := func(u *userdb.User) bool { return u != nil && u.Disabled && (anyReason || ruleSuspended(u)) }
	login = strings.ToLower(login)
	u, err := db.Get(login)
	if errors.Is(err, userdb.ErrNotFound) || err == nil && !wanted(u) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	err = db.Update(func(users map[string]*userdb.User) error {
		if u := users[login]; wanted(u) {
			u.Disabled, u.Suspended, u.Reason = false, false, ""
			enabled = true
		}
		return nil
	})
	return enabled, err
}
