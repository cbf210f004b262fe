package main

import (
	"context"
	"time"

	"sluice/screen"
	"sluice/submit"
)

// authGuard is the FailureGuard AUTH asks: guard, or, when guard is the
// Redis guard and auth's store the Redis suspensions on the same client,
// one that reads the login's suspension in the lockout check's round trip
// (submit.SuspensionPrefetcher): one round trip to Redis for a successful
// AUTH instead of two. auth judges what was read after the password check,
// as it judges its store's answer.
func authGuard(guard submit.FailureGuard, auth authSuspensions) submit.FailureGuard {
	g, ok := guard.(*screen.RedisGuard)
	rs, ok2 := auth.store.(*screen.RedisSuspensions)
	if !ok || !ok2 || !g.SharesClient(rs) {
		return guard
	}
	return prefetchGuard{RedisGuard: g, store: rs, auth: auth}
}

// prefetchGuard is the Redis guard reading the suspension store with it.
type prefetchGuard struct {
	*screen.RedisGuard
	store *screen.RedisSuspensions
	auth  authSuspensions
}

// LockedPrefetch implements submit.SuspensionPrefetcher.
func (g prefetchGuard) LockedPrefetch(ctx context.Context, login, ip string) (loginUntil, ipUntil time.Time, susp submit.Suspensions, err error) {
	loginUntil, ipUntil, pre, err := g.LockedSuspension(ctx, login, ip, g.store)
	a := g.auth
	a.store = pre
	return loginUntil, ipUntil, a, err
}
