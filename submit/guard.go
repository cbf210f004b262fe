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
type FailureGuard interface {
	// Locked reports until when login or ip is locked out.
	Locked(ctx context.Context, login, ip string) (until time.Time, locked bool, err error)
	// Failed records a failed login with a fingerprint of the wrong
	// password and reports whether this failure locked login or ip out.
	Failed(ctx context.Context, login, ip, fingerprint string) (until time.Time, locked bool, err error)
}

// GuardLimits configure a FailureGuard.
type GuardLimits struct {
	PerLogin int           // distinct wrong passwords per login within Window
	PerIP    int           // distinct failures per client IP within Window
	Window   time.Duration // how long failures are remembered
	Lockout  time.Duration // how long a lock lasts
}

// fingerprinter turns a (login, password) pair into a short keyed hash, so
// that no password is kept or compared in the clear.
type fingerprinter struct{ key []byte }

func newFingerprinter() *fingerprinter {
	k := make([]byte, 32)
	rand.Read(k)
	return &fingerprinter{key: k}
}

func (f *fingerprinter) of(login, password string) string {
	m := hmac.New(sha256.New, f.key)
	m.Write([]byte(login))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return hex.EncodeToString(m.Sum(nil)[:12])
}

// MemoryGuard is the in-process FailureGuard for a single instance.
type MemoryGuard struct {
	limits GuardLimits
	now    func() time.Time

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
	return &MemoryGuard{limits: l, now: time.Now, keys: map[string]*failures{}}
}

// Locked implements FailureGuard.
func (g *MemoryGuard) Locked(_ context.Context, login, ip string) (time.Time, bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	for _, k := range []string{"l:" + login, "i:" + ip} {
		if f := g.keys[k]; f != nil && now.Before(f.locked) {
			return f.locked, true, nil
		}
	}
	return time.Time{}, false, nil
}

// Failed implements FailureGuard.
func (g *MemoryGuard) Failed(_ context.Context, login, ip, fp string) (time.Time, bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	g.sweep(now)
	var until time.Time
	locked := false
	for _, c := range []struct {
		key   string
		limit int
	}{{"l:" + login, g.limits.PerLogin}, {"i:" + ip, g.limits.PerIP}} {
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
			locked = true
			if f.locked.After(until) {
				until = f.locked
			}
		}
	}
	return until, locked, nil
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
