package screen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisGuard counts failed logins in Redis, so a brute-force lockout holds
// across every instance. It has the method set of submit.FailureGuard.
//
//	sluice:auth:{login:NAME}:f   sorted set of wrong-password fingerprints
//	sluice:auth:{login:NAME}:lock present while locked (PX = lockout)
//	sluice:auth:{ip:ADDR}:f / :lock the same per client IP
//	sluice:auth:fpkey             the fingerprint key all instances share
//
// The fingerprint key is random, made by whichever instance needs it first
// (one script: GET, or SET with a TTL if absent), and its TTL is refreshed
// each time an instance fetches it (at most once a minute per instance).
// The TTL is longer than the failure window, so while any fingerprint is
// remembered its key is the same one on every instance and after restarts;
// a key that expired had no remembered fingerprints left. If Redis loses
// the key (flush, failover without persistence), instances that cached the
// old one use it for up to a minute: a repeated password may then count
// twice in that minute, never more.
type RedisGuard struct {
	rdb     redis.UniversalClient
	perLog  int
	perIP   int
	window  time.Duration
	lockout time.Duration

	kmu   sync.Mutex
	key   []byte
	keyAt time.Time
}

// NewRedisGuard returns a guard with the given limits.
func NewRedisGuard(rdb redis.UniversalClient, perLogin, perIP int, window, lockout time.Duration) *RedisGuard {
	return &RedisGuard{rdb: rdb, perLog: perLogin, perIP: perIP, window: window, lockout: lockout}
}

var failScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, limit, lockout = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then return ttl end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  redis.call('SET', KEYS[2], '1', 'PX', lockout)
  redis.call('DEL', KEYS[1])
  return lockout
end
return 0
`)

// fpKeyScript returns the shared fingerprint key, creating it (ARGV[1])
// when absent, and sets its TTL (ARGV[2] ms) either way.
var fpKeyScript = redis.NewScript(`
local k = redis.call('GET', KEYS[1])
if not k then
  k = ARGV[1]
  redis.call('SET', KEYS[1], k, 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return k
`)

// fingerprintKeyName is the Redis key of the shared fingerprint key.
const fingerprintKeyName = "sluice:auth:fpkey"

func guardKeys(kind, id string) []string {
	p := "sluice:auth:{" + kind + ":" + id + "}"
	return []string{p + ":f", p + ":lock"}
}

// Locked reports until when login and ip are locked out (zero: not locked).
func (g *RedisGuard) Locked(ctx context.Context, login, ip string) (loginUntil, ipUntil time.Time, err error) {
	pipe := g.rdb.Pipeline()
	locked := g.queueLocked(ctx, pipe, login, ip)
	pipe.Exec(ctx) // each command keeps its own error
	return locked()
}

// queueLocked queues Locked's two PTTLs on pipe; after pipe.Exec, the
// function returned gives Locked's answer.
func (g *RedisGuard) queueLocked(ctx context.Context, pipe redis.Pipeliner, login, ip string) func() (loginUntil, ipUntil time.Time, err error) {
	a := pipe.PTTL(ctx, guardKeys("login", login)[1])
	b := pipe.PTTL(ctx, guardKeys("ip", ip)[1])
	return func() (loginUntil, ipUntil time.Time, err error) {
		for _, c := range []*redis.DurationCmd{a, b} {
			if err := c.Err(); err != nil && err != redis.Nil {
				return time.Time{}, time.Time{}, fmt.Errorf("%w: lockout check: %v", ErrStore, err)
			}
		}
		now := time.Now()
		if a.Val() > 0 {
			loginUntil = now.Add(a.Val())
		}
		if b.Val() > 0 {
			ipUntil = now.Add(b.Val())
		}
		return loginUntil, ipUntil, nil
	}
}

// SharesClient reports whether susp uses the guard's Redis client, so that
// LockedSuspension reads both in one round trip.
func (g *RedisGuard) SharesClient(susp *RedisSuspensions) bool {
	return susp != nil && g.rdb == susp.rdb
}

// LockedSuspension is Locked, and reads login's suspension from susp in
// the same pipeline: one round trip. err is Locked's error only; the
// suspension's answer, its error included, is the returned store's State
// (and Suspended) of login, to be asked after the password check. When
// susp does not share the guard's client (SharesClient), nothing is read
// ahead: the returned store asks susp when asked, as susp would. The
// store returned is never nil; susp must not be nil.
func (g *RedisGuard) LockedSuspension(ctx context.Context, login, ip string, susp *RedisSuspensions) (loginUntil, ipUntil time.Time, pre *PrefetchedSuspensions, err error) {
	if !g.SharesClient(susp) {
		loginUntil, ipUntil, err = g.Locked(ctx, login, ip)
		return loginUntil, ipUntil, &PrefetchedSuspensions{RedisSuspensions: susp}, err
	}
	pipe := g.rdb.Pipeline()
	locked := g.queueLocked(ctx, pipe, login, ip)
	state := susp.queueState(ctx, pipe, login)
	pipe.Exec(ctx) // each command keeps its own error
	pre = &PrefetchedSuspensions{RedisSuspensions: susp, login: strings.ToLower(login), read: true}
	pre.sus, pre.liftedAt, pre.err = state()
	loginUntil, ipUntil, err = locked()
	return loginUntil, ipUntil, pre, err
}

// Failed records a failed login; a fingerprint seen before in the window is
// not a new guess. It reports until when login and ip are now locked.
func (g *RedisGuard) Failed(ctx context.Context, login, ip, fp string) (loginUntil, ipUntil time.Time, err error) {
	for _, c := range []struct {
		kind, id string
		limit    int
		until    *time.Time
	}{{"login", login, g.perLog, &loginUntil}, {"ip", ip, g.perIP, &ipUntil}} {
		if c.limit <= 0 {
			continue
		}
		ms, err := failScript.Run(ctx, g.rdb, guardKeys(c.kind, c.id), fp, g.window.Milliseconds(), c.limit, g.lockout.Milliseconds()).Int64()
		if err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("%w: lockout count: %v", ErrStore, err)
		}
		if ms > 0 {
			*c.until = time.Now().Add(time.Duration(ms) * time.Millisecond)
		}
	}
	return loginUntil, ipUntil, nil
}

// fingerprintKeyTTL is how long the shared key lives without being
// fetched: twice the failure window, at least 10 minutes.
func (g *RedisGuard) fingerprintKeyTTL() time.Duration {
	return max(2*g.window, 10*time.Minute)
}

// FingerprintKey returns the key every instance sharing this Redis uses
// for password fingerprints. It is cached for a minute; when Redis cannot
// answer, a cached key is used, else the error is returned.
func (g *RedisGuard) FingerprintKey(ctx context.Context) ([]byte, error) {
	g.kmu.Lock()
	defer g.kmu.Unlock()
	// The TTL is at least 10 minutes: a minute's cache never outlives it.
	if g.key != nil && time.Since(g.keyAt) < time.Minute {
		return g.key, nil
	}
	ttl := g.fingerprintKeyTTL()
	fresh := make([]byte, 32)
	rand.Read(fresh)
	k, err := fpKeyScript.Run(ctx, g.rdb, []string{fingerprintKeyName}, hex.EncodeToString(fresh), ttl.Milliseconds()).Text()
	if err != nil {
		if g.key != nil {
			return g.key, nil
		}
		return nil, fmt.Errorf("%w: fingerprint key: %v", ErrStore, err)
	}
	g.key, g.keyAt = []byte(k), time.Now()
	return g.key, nil
}
