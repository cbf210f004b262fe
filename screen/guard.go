package screen

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisGuard counts failed logins in Redis, so a brute-force lockout holds
// across every instance. It has the method set of submit.FailureGuard.
//
//	sluice:auth:{login:NAME}:f   sorted set of wrong-password fingerprints
//	sluice:auth:{login:NAME}:lock present while locked (PX = lockout)
//	sluice:auth:{ip:ADDR}:f / :lock the same per client IP
type RedisGuard struct {
	rdb     redis.UniversalClient
	perLog  int
	perIP   int
	window  time.Duration
	lockout time.Duration
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

func guardKeys(kind, id string) []string {
	p := "sluice:auth:{" + kind + ":" + id + "}"
	return []string{p + ":f", p + ":lock"}
}

// Locked reports until when login or ip is locked out.
func (g *RedisGuard) Locked(ctx context.Context, login, ip string) (time.Time, bool, error) {
	pipe := g.rdb.Pipeline()
	a := pipe.PTTL(ctx, guardKeys("login", login)[1])
	b := pipe.PTTL(ctx, guardKeys("ip", ip)[1])
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return time.Time{}, false, fmt.Errorf("%w: lockout check: %v", ErrStore, err)
	}
	ttl := max(a.Val(), b.Val())
	if ttl > 0 {
		return time.Now().Add(ttl), true, nil
	}
	return time.Time{}, false, nil
}

// Failed records a failed login; a fingerprint seen before in the window is
// not a new guess.
func (g *RedisGuard) Failed(ctx context.Context, login, ip, fp string) (time.Time, bool, error) {
	var longest int64
	for _, c := range []struct {
		kind, id string
		limit    int
	}{{"login", login, g.perLog}, {"ip", ip, g.perIP}} {
		if c.limit <= 0 {
			continue
		}
		ms, err := failScript.Run(ctx, g.rdb, guardKeys(c.kind, c.id), fp, g.window.Milliseconds(), c.limit, g.lockout.Milliseconds()).Int64()
		if err != nil {
			return time.Time{}, false, fmt.Errorf("%w: lockout count: %v", ErrStore, err)
		}
		longest = max(longest, ms)
	}
	if longest > 0 {
		return time.Now().Add(time.Duration(longest) * time.Millisecond), true, nil
	}
	return time.Time{}, false, nil
}
