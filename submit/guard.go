package submit

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

// FailureGuard counts failed logins per login and per client IP and says
// when either is locked out. A repeated wrong password is one guess, not
// several: mail clients retry the same stored password again and again, and
// that must not lock a user out, while a brute-force attack tries new ones.
//
// The times say until when the login and the client's address are locked
// out; a zero time means not locked. (Plain types, so that screen's Redis
// guard needs nothing from this package.)
type FailureGuard interface {
	// Locked reports whether login or ip is locked out.
	Locked(ctx context.Context, login, ip string) (loginUntil, ipUntil time.Time, err error)
	// Failed records a failed login with a fingerprint of the wrong
	// password and reports whether login or ip is now locked out.
	Failed(ctx context.Context, login, ip, fingerprint string) (loginUntil, ipUntil time.Time, err error)
	// FingerprintKey is the key of the password fingerprints. Every
	// instance that shares the guard's store must get the same key (and
	// keep it across restarts while failures are remembered), or the same
	// stale password would count as a new guess on each of them.
	FingerprintKey(ctx context.Context) ([]byte, error)
}

// SuspensionPrefetcher is what a FailureGuard may also be when its store
// holds the Server's Suspensions too (one Redis): AUTH then reads the
// lockout and the suspension of a login in one round trip, before the
// password check, and judges the suspension after a right password as it
// judges Suspensions' answer (a wrong password never looks at it). It is
// used only when Suspensions is set; wire it with the same store.
type SuspensionPrefetcher interface {
	// LockedPrefetch is Locked; err is Locked's error only. susp answers
	// Suspended for login from what was read with the lockout (the
	// suspension check's own error included) and asks the store for any
	// other login: a backend may name the login otherwise than typed.
	LockedPrefetch(ctx context.Context, login, ip string) (loginUntil, ipUntil time.Time, susp Suspensions, err error)
}

// lockout is what a FailureGuard found locked, and until when.
type lockout struct {
	login, ip bool
	until     time.Time
}

func newLockout(loginUntil, ipUntil time.Time) lockout {
	return lockout{login: !loginUntil.IsZero(), ip: !ipUntil.IsZero(), until: later(loginUntil, ipUntil)}
}

func (l lockout) active() bool { return l.login || l.ip }

// GuardLimits configure a FailureGuard.
type GuardLimits struct {
	PerLogin int           // distinct wrong passwords per login within Window
	PerIP    int           // distinct failures per client IP within Window
	Window   time.Duration // how long failures are remembered
	Lockout  time.Duration // how long a lock lasts
}

// fingerprint turns a (login, password) pair into a short keyed hash, so
// that no password is kept or compared in the clear.
func fingerprint(key []byte, login, password string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(login))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return hex.EncodeToString(m.Sum(nil)[:12])
}

func randomKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// MemoryGuard is the in-process FailureGuard for a single instance.
type MemoryGuard struct {
	limits GuardLimits
	now    func() time.Time
	key    []byte // this process's fingerprint key: one instance, no sharing

	mu     sync.Mutex
	keys   map[string]*failures
	sweeps int
}

type failures struct {
	seen   map[string]time.Time // fingerprint -> last seen
	locked time.Time
}

// NewMemoryGuard returns an in-memory guard.
func NewMemoryGuard(l GuardLimits) *MemoryGuard {
	return &MemoryGuard{limits: l, now: time.Now, key: randomKey(), keys: map[string]*failures{}}
}

// FingerprintKey implements FailureGuard.
func (g *MemoryGuard) FingerprintKey(context.Context) ([]byte, error) { return g.key, nil }

// Locked implements FailureGuard.
func (g *MemoryGuard) Locked(_ context.Context, login, ip string) (loginUntil, ipUntil time.Time, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if f := g.keys["l:"+login]; f != nil && now.Before(f.locked) {
		loginUntil = f.locked
	}
	if f := g.keys["i:"+ip]; f != nil && now.Before(f.locked) {
		ipUntil = f.locked
	}
	return loginUntil, ipUntil, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Failed implements FailureGuard.
func (g *MemoryGuard) Failed(_ context.Context, login, ip, fp string) (loginUntil, ipUntil time.Time, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	g.sweep(now)
	for _, c := range []struct {
		key   string
		limit int
		until *time.Time
	}{{"l:" + login, g.limits.PerLogin, &loginUntil}, {"i:" + ip, g.limits.PerIP, &ipUntil}} {
		if c.limit <= 0 {
			continue
		}
		f := g.keys[c.key]
		if f == nil {
			f = &failures{seen: map[string]time.Time{}}
			g.keys[c.key] = f
		}
		for k, t := range f.seen {
			if now.Sub(t) > g.limits.Window {
				delete(f.seen, k)
			}
		}
		f.seen[fp] = now
		if len(f.seen) >= c.limit {
			f.locked = now.Add(g.limits.Lockout)
			f.seen = map[string]time.Time{}
		}
		if now.Before(f.locked) {
			*c.until = f.locked
		}
	}
	return loginUntil, ipUntil, nil
}

// sweep drops stale entries now and then so the map cannot grow without
// bound under a spray of usernames.
func (g *MemoryGuard) sweep(now time.Time) {
	g.sweeps++
	if g.sweeps%256 != 0 {
		return
	}
	for k, f := range g.keys {
		if now.After(f.locked) {
			stale := true
			for _, t := range f.seen {
				if now.Sub(t) <= g.limits.Window {
					stale = false
					break
				}
			}
			if stale {
				delete(g.keys, k)
			}
		}
	}
}
