package screen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore is the QuotaStore shared by every instance: one Lua script per
// operation, so a check and its charge are one atomic round trip. Redis's
// own clock (TIME) is used, so instances with skewed clocks still agree.
//
// Per scope four keys, all hash-tagged with the charge's tag (the login's
// domain) so that a login's and its domain's counters sit in one Cluster
// slot and change together:
//
//	sluice:q:{tag}:KEY:log   sorted set of charges, member "id:n", score ms
//	sluice:q:{tag}:KEY:sum   recipients charged within the window
//	sluice:q:{tag}:KEY:rexp  sorted set of reservations, score = expiry ms
//	sluice:q:{tag}:KEY:rcnt  hash txn -> reserved n, and "_sum"
//
// Every key gets a TTL of window+hold+1min on every write that adds to it:
// no key lives forever.
type RedisStore struct {
	rdb   redis.UniversalClient
	cfg   StoreConfig
	rooms rooms // RCPT pre-checks answered without a round trip

	// prechecks counts Reserve's answers by where they came from: no
	// limit, the room known, or Redis (PrecheckCounts).
	prechecks struct{ noLimit, knownRoom, redis atomic.Int64 }
}

// PrecheckCounts reports how Reserve answered so far (for metrics): for
// logins without a limit, from the room known, and by asking Redis.
func (r *RedisStore) PrecheckCounts() (noLimit, knownRoom, redis int64) {
	return r.prechecks.noLimit.Load(), r.prechecks.knownRoom.Load(), r.prechecks.redis.Load()
}

// NewRedisStore uses rdb (a single server, Sentinel or Cluster client).
func NewRedisStore(rdb redis.UniversalClient, cfg StoreConfig) *RedisStore {
	r := &RedisStore{rdb: rdb, cfg: cfg}
	r.rooms.life = cfg.Hold + time.Minute
	return r
}

// quotaScript does reserve, commit, release, usage, reset, count and
// repeat (CountRepeat). It returns
// {0, now} on success or {1, scopeIndex, used, nextFitMs, now} when a scope
// is full; a reserve, and a commit that was checked (not within its
// reservation), answer {0, now, room}: what still fits in the fullest
// limited scope (-1 when none has a limit); for usage {used, reserved, oldestMs, now}; for count {0, now,
// total}. seen adds ARGV[8...] (recipients) to the set that is the last
// key (the login's recipient history, given the TTL ARGV[7] ms) and
// answers {0, now, how many were new}; countnew does the same and then
// count with n that number: {0, now, total}, or {0, now, -1} when none was
// new (nothing counted).
var quotaScript = redis.NewScript(`
local function run(KEYS, ARGV, now)
  local op = ARGV[1]
  local window = tonumber(ARGV[2])
  local hold = tonumber(ARGV[3])
  local txn = ARGV[4]
  local n = tonumber(ARGV[5])
  local id = ARGV[6]
  local ttl = window + hold + 60000
  local nscopes = math.floor(#KEYS / 4)
  -- count and countnew keep log and sum only (no reservations): the other
  -- two keys are neither read nor kept alive.
  local counting = op == 'count' or op == 'countnew'

  local function k(i, j) return KEYS[4 * (i - 1) + j] end

  local function clean(i)
    local log, sum, rexp, rcnt = k(i, 1), k(i, 2), k(i, 3), k(i, 4)
    local old = redis.call('ZRANGEBYSCORE', log, '-inf', now - window)
    if #old > 0 then
      local drop = 0
      for _, m in ipairs(old) do drop = drop + tonumber(string.match(m, ':(%d+)$')) end
      redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
      redis.call('DECRBY', sum, drop)
    end
    if counting then return end -- counters have no reservations
    local gone = redis.call('ZRANGEBYSCORE', rexp, '-inf', now)
    if #gone > 0 then
      for _, r in ipairs(gone) do
        local c = tonumber(redis.call('HGET', rcnt, r) or '0')
        redis.call('HDEL', rcnt, r)
        redis.call('HINCRBY', rcnt, '_sum', -c)
      end
      redis.call('ZREMRANGEBYSCORE', rexp, '-inf', now)
    end
  end

  local function used(i)
    return tonumber(redis.call('GET', k(i, 2)) or '0') + tonumber(redis.call('HGET', k(i, 4), '_sum') or '0')
  end

  local function nextfit(i, u, limit)
    local need = u + n - limit
    local acc = 0
    local entries = redis.call('ZRANGE', k(i, 1), 0, -1, 'WITHSCORES')
    for j = 1, #entries, 2 do
      acc = acc + tonumber(string.match(entries[j], ':(%d+)$'))
      if acc >= need then return tonumber(entries[j + 1]) + window end
    end
    return now + hold
  end

  local function reserved(i) return tonumber(redis.call('HGET', k(i, 4), txn) or '0') end

  -- already: whether message id is charged in every scope (a commit run
  -- again after its answer was lost, near the limit): not refused then.
  local function already()
    for i = 1, nscopes do
      if not redis.call('ZSCORE', k(i, 1), id .. ':' .. n) then return false end
    end
    return true
  end

  -- unreserve drops the reservation txn, of c (default: as stored).
  local function unreserve(i, c)
    c = c or reserved(i)
    if c > 0 then
      redis.call('HDEL', k(i, 4), txn)
      redis.call('HINCRBY', k(i, 4), '_sum', -c)
      redis.call('ZREM', k(i, 3), txn)
    end
  end

  -- charge adds message id's n to scope i once: a commit run again (a
  -- retried call, or submit's own Commit after a batch it could not read)
  -- finds its entry and counts nothing more.
  local function charge(i)
    if redis.call('ZADD', k(i, 1), 'NX', now, id .. ':' .. n) == 1 then
      redis.call('INCRBY', k(i, 2), n)
    end
  end

  -- touch gives the keys a write added to the TTL: the log and sum when
  -- a charge went in (from, to = 1, 2), the reservations when one did
  -- (3, 4). A key only removed from keeps its TTL, which still outlives
  -- what is left in it: each entry was added under a TTL at least its own
  -- life.
  local function touch(i, from, to)
    for j = from, to do redis.call('PEXPIRE', k(i, j), ttl) end
  end

  if op == 'reset' then
    for i = 1, nscopes do for j = 1, 4 do redis.call('DEL', k(i, j)) end end
    return {0, now}
  end

  if op == 'repeat' then
    -- KEYS: the login's fingerprints (hash: fingerprint -> the times it
    -- was counted within the window, ms, space-separated) and when each
    -- was last counted (sorted set). Two keys a login, however many
    -- messages: fingerprints not counted within the window are dropped.
    local h, z, fp, keep = KEYS[1], KEYS[2], ARGV[7], tonumber(ARGV[8])
    local cut = now - window
    local gone = redis.call('ZRANGEBYSCORE', z, '-inf', cut)
    if #gone > 0 then
      redis.call('ZREMRANGEBYSCORE', z, '-inf', cut)
      for i = 1, #gone, 1000 do redis.call('HDEL', h, unpack(gone, i, math.min(i + 999, #gone))) end
    end
    local times = {}
    local v = redis.call('HGET', h, fp)
    if v then
      for ms in string.gmatch(v, '%d+') do
        if tonumber(ms) > cut then times[#times + 1] = ms end
      end
    end
    times[#times + 1] = string.format('%d', now)
    if #times > keep then times = {unpack(times, #times - keep + 1)} end
    redis.call('HSET', h, fp, table.concat(times, ' '))
    redis.call('ZADD', z, now, fp)
    redis.call('PEXPIRE', h, window + 60000)
    redis.call('PEXPIRE', z, window + 60000)
    return {0, now, #times}
  end

  -- have: what txn holds in each scope (commit only).
  local have = {}
  if op == 'commit' then
    -- A commit within its reservation needs neither the clean-up nor the
    -- check: the reservation still holds its room (it would be gone had
    -- a clean-up expired it). Short or gone (or none: RCPT's pre-check
    -- was answered by the caller, see rooms in room.go): checked below.
    local covered = true
    for i = 1, nscopes do
      have[i] = reserved(i)
      if have[i] < n then covered = false end
    end
    if covered then
      for i = 1, nscopes do
        unreserve(i, have[i])
        charge(i)
        touch(i, 1, 2)
      end
      return {0, now}
    end
  end

  for i = 1, nscopes do clean(i) end
  if op == 'commit' then
    -- The clean-up may have expired a reservation held.
    for i = 1, nscopes do if have[i] > 0 then have[i] = reserved(i) end end
  end

  if op == 'usage' then
    local first = redis.call('ZRANGE', k(1, 1), 0, 0, 'WITHSCORES')
    local oldest = 0
    if #first > 0 then oldest = tonumber(first[2]) end
    return {tonumber(redis.call('GET', k(1, 2)) or '0'), tonumber(redis.call('HGET', k(1, 4), '_sum') or '0'), oldest, now}
  end

  if op == 'seen' or op == 'countnew' then
    local set = KEYS[#KEYS]
    n = 0
    for j = 8, #ARGV, 1000 do n = n + redis.call('SADD', set, unpack(ARGV, j, math.min(j + 999, #ARGV))) end
    redis.call('PEXPIRE', set, ARGV[7])
    if op == 'seen' then return {0, now, n} end
    if n == 0 then return {0, now, -1} end
    op = 'count'
  end

  if op == 'count' then
    redis.call('ZADD', k(1, 1), now, id .. ':' .. n)
    local total = redis.call('INCRBY', k(1, 2), n)
    touch(1, 1, 2)
    return {0, now, total}
  end

  if op == 'refund' then
    for i = 1, nscopes do
      if redis.call('ZREM', k(i, 1), id .. ':' .. n) == 1 then redis.call('DECRBY', k(i, 2), n) end
    end
    return {0, now}
  end

  if op == 'release' then
    for i = 1, nscopes do unreserve(i) end
    return {0, now}
  end

  -- room: what still fits after this, in the fullest limited scope; -1
  -- when none has a limit. A reserve may give after the limits what the
  -- caller granted to other transactions without Redis (see rooms in
  -- room.go): checked as used, not reserved, and not in the room.
  local room = -1
  local others = 0
  if op == 'reserve' then others = tonumber(ARGV[7 + nscopes] or '0') end
  for i = 1, nscopes do
    local limit = tonumber(ARGV[6 + i])
    local u = used(i)
    if op == 'commit' then u = u - have[i] end
    if limit > 0 and u + others + n > limit then
      if op == 'commit' and already() then return {0, now} end
      return {1, i, u + others, nextfit(i, u + others, limit), now}
    end
    if limit > 0 and (room < 0 or limit - u - n < room) then room = limit - u - n end
  end

  for i = 1, nscopes do
    if op == 'reserve' then
      redis.call('HINCRBY', k(i, 4), txn, n)
      redis.call('HINCRBY', k(i, 4), '_sum', n)
      redis.call('ZADD', k(i, 3), now + hold, txn)
      touch(i, 3, 4)
    else
      unreserve(i, have[i])
      charge(i)
      touch(i, 1, 2)
    end
  end
  return {0, now, room}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- batch: several calls in one invocation, as one atomic step at one time.
-- ARGV[2] is the number of calls; then per call its number of keys, of
-- arguments, and a stop: when above 0 and the call's count (its answer's
-- third value) is above it, the calls after it are not run; then the
-- calls' arguments one after the other, KEYS likewise. The answer is the
-- list of the answers of the calls run.
if ARGV[1] == 'batch' then
  local calls = tonumber(ARGV[2])
  local ki, ai = 1, 3 + 3 * calls
  local out = {}
  for c = 1, calls do
    local nk, na, stop = tonumber(ARGV[3 * c]), tonumber(ARGV[1 + 3 * c]), tonumber(ARGV[2 + 3 * c])
    local keys, argv = {}, {}
    for i = 1, nk do keys[i] = KEYS[ki + i - 1] end
    for i = 1, na do argv[i] = ARGV[ai + i - 1] end
    ki, ai = ki + nk, ai + na
    out[c] = run(keys, argv, now)
    if stop > 0 and (out[c][3] or 0) > stop then break end
  end
  return out
end
return run(KEYS, ARGV, now)
`)

func quotaKeys(tag string, keys ...string) []string {
	out := make([]string, 0, 4*len(keys))
	for _, key := range keys {
		p := "sluice:q:{" + tag + "}:" + key
		out = append(out, p+":log", p+":sum", p+":rexp", p+":rcnt")
	}
	return out
}

// call is the quotaScript call of op for c: its keys and its arguments
// (ARGV[1..6], then one limit per scope).
func (r *RedisStore) call(op string, c Charge) scriptCall {
	keys := make([]string, 0, len(c.Scopes))
	args := make([]any, 0, 6+len(c.Scopes))
	args = append(args, op, r.cfg.Window.Milliseconds(), r.cfg.Hold.Milliseconds(), c.Txn, c.N, c.ID)
	for _, s := range c.Scopes {
		keys = append(keys, s.Key)
		args = append(args, s.Limit)
	}
	return scriptCall{keys: quotaKeys(c.Tag, keys...), args: args}
}

func (r *RedisStore) run(ctx context.Context, op string, c Charge) ([]int64, error) {
	sc := r.call(op, c)
	res, err := quotaScript.Run(ctx, r.rdb, sc.keys, sc.args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrStore, op, err)
	}
	return res, nil
}

func (r *RedisStore) refusal(c Charge, res []int64) *Refusal {
	if len(res) < 5 || res[0] != 1 {
		return nil
	}
	i := int(res[1]) - 1
	if i < 0 || i >= len(c.Scopes) {
		i = 0
	}
	return &Refusal{Scope: c.Scopes[i], Used: int(res[2]), NextFit: time.UnixMilli(res[3])}
}

// Reserve implements QuotaStore. A charge with no limit holds nothing, and
// one with room to spare by a fresh answer is granted here (see rooms):
// neither asks Redis, whose commit at the end of DATA checks the limit.
func (r *RedisStore) Reserve(ctx context.Context, c Charge) (*Refusal, error) {
	if limited(c) == 0 {
		r.prechecks.noLimit.Add(1)
		return nil, nil
	}
	ok, held, others := r.rooms.take(c, time.Now())
	if ok {
		r.prechecks.knownRoom.Add(1)
		return nil, nil
	}
	r.prechecks.redis.Add(1)
	all := c
	all.N += held // the transaction's local grants move into Redis with it
	sc := r.call("reserve", all)
	sc.args = append(sc.args, others) // checked too, not reserved
	res, err := quotaScript.Run(ctx, r.rdb, sc.keys, sc.args...).Int64Slice()
	if err != nil {
		// The reservation may have been made and its answer lost: a
		// release must ask Redis.
		r.rooms.reserved(c, false)
		return nil, fmt.Errorf("%w: reserve: %v", ErrStore, err)
	}
	r.rooms.note(c, res, time.Now())
	if ref := r.refusal(c, res); ref != nil {
		return ref, nil
	}
	r.rooms.reserved(c, true)
	return nil, nil
}

// Commit implements QuotaStore.
func (r *RedisStore) Commit(ctx context.Context, c Charge) (*Refusal, error) {
	res, err := r.run(ctx, "commit", c)
	if err != nil {
		return nil, err
	}
	r.committed(c, res)
	return r.refusal(c, res), nil
}

// committed takes the answer res of Redis to c's commit: the room it
// reports, and, when it charged, c's transaction out of the ledger of
// local grants (a refused one is still open: its release asks Redis).
func (r *RedisStore) committed(c Charge, res []int64) {
	r.rooms.note(c, res, time.Now())
	if len(res) > 0 && res[0] == 0 {
		r.rooms.done(c.Txn, len(res) < 3)
	}
}

// Release implements QuotaStore. A transaction granted only from the
// known room, or for a login without a limit, holds nothing in Redis.
func (r *RedisStore) Release(ctx context.Context, c Charge) error {
	if known, inRedis := r.rooms.done(c.Txn, false); known && !inRedis || !known && limited(c) == 0 {
		return nil
	}
	_, err := r.run(ctx, "release", c)
	return err
}

// Refund takes back the charge of message c.ID (c.N recipients).
func (r *RedisStore) Refund(ctx context.Context, c Charge) error {
	_, err := r.run(ctx, "refund", c)
	return err
}

// Count implements QuotaStore.
func (r *RedisStore) Count(ctx context.Context, tag, key, id string, n int) (int, error) {
	res, err := r.run(ctx, "count", Charge{Tag: tag, Scopes: []Scope{{Key: key}}, ID: id, N: n})
	if err != nil {
		return 0, err
	}
	return countResult(res)
}

// CountRepeat counts one more copy of the content fp from login and
// returns how many were counted within the window, this one included (at
// most keep: the caller's need). A login's copies live in two keys, not two a message:
// a busy gateway's Redis holds as many keys as logins that sent within the
// window.
func (r *RedisStore) CountRepeat(ctx context.Context, tag, login, fp string, keep int) (int, error) {
	c := r.repeatCall(tag, login, fp, keep)
	res, err := quotaScript.Run(ctx, r.rdb, c.keys, c.args...).Int64Slice()
	if err != nil {
		return 0, fmt.Errorf("%w: repeat count: %v", ErrStore, err)
	}
	return countResult(res)
}

// repeatCall is CountRepeat as a call of a batch.
func (r *RedisStore) repeatCall(tag, login, fp string, keep int) scriptCall {
	p := "sluice:fp:{" + tag + "}:" + strings.ToLower(login)
	return scriptCall{keys: []string{p + ":h", p + ":t"},
		args: []any{"repeat", r.cfg.Window.Milliseconds(), r.cfg.Hold.Milliseconds(), "", 1, "", fp, keep}}
}

// Usage implements QuotaStore.
func (r *RedisStore) Usage(ctx context.Context, tag, key string) (Usage, error) {
	res, err := r.run(ctx, "usage", Charge{Tag: tag, Scopes: []Scope{{Key: key}}})
	if err != nil {
		return Usage{}, err
	}
	if len(res) < 4 {
		return Usage{}, fmt.Errorf("%w: usage: short answer", ErrStore)
	}
	u := Usage{Used: int(res[0]), Reserved: int(res[1])}
	if res[2] > 0 {
		u.Resets = time.UnixMilli(res[2]).Add(r.cfg.Window)
	}
	return u, nil
}

// Reset implements QuotaStore.
func (r *RedisStore) Reset(ctx context.Context, tag, key string) error {
	_, err := r.run(ctx, "reset", Charge{Tag: tag, Scopes: []Scope{{Key: key}}})
	return err
}

// Ping reports whether Redis answers.
func (r *RedisStore) Ping(ctx context.Context) error {
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrStore, err)
	}
	return nil
}

// NewRedisClient builds a go-redis UniversalClient from one URL form:
//
//	redis://[:password@]host:port[/db]            a single server
//	rediss://...                                   the same over TLS
//	unix://[:password@]/path/redis.sock[?db=N]     a single server on this host
//	redis-sentinel://[:password@]h1:p1,h2:p2/MASTER[?db=N]
//	redis-cluster://[:password@]h1:p1,h2:p2
//
// timeout bounds dialing, reads and writes (the on_store_error policy
// applies past it).
func NewRedisClient(url string, timeout time.Duration) (redis.UniversalClient, error) {
	opts := &redis.UniversalOptions{DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, MaxRetries: 1, PoolSize: 64}
	switch {
	case strings.HasPrefix(url, "redis://"), strings.HasPrefix(url, "rediss://"):
		o, err := redis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("redis_url: %v", err)
		}
		opts.Addrs = []string{o.Addr}
		opts.Password, opts.Username, opts.DB, opts.TLSConfig = o.Password, o.Username, o.DB, o.TLSConfig
	case strings.HasPrefix(url, "unix://"):
		// A Redis on the same host over its Unix socket: no TCP stack
		// between the two, the cheapest round trip there is.
		o, err := redis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("redis_url: %v", err)
		}
		opts.Addrs = []string{o.Addr}
		opts.Password, opts.Username, opts.DB = o.Password, o.Username, o.DB
		opts.Dialer = func(ctx context.Context, _, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: timeout}
			return d.DialContext(ctx, "unix", addr)
		}
	case strings.HasPrefix(url, "redis-sentinel://"), strings.HasPrefix(url, "redis-cluster://"):
		rest := url[strings.Index(url, "://")+3:]
		if at := strings.LastIndexByte(rest, '@'); at >= 0 {
			cred := rest[:at]
			rest = rest[at+1:]
			if i := strings.IndexByte(cred, ':'); i >= 0 {
				opts.Username, opts.Password = cred[:i], cred[i+1:]
			} else {
				opts.Password = cred
			}
		}
		hosts, path, _ := strings.Cut(rest, "/")
		opts.Addrs = strings.Split(hosts, ",")
		if strings.HasPrefix(url, "redis-sentinel://") {
			master, q, _ := strings.Cut(path, "?")
			if master == "" {
				return nil, errors.New("redis_url: a sentinel URL names the master: redis-sentinel://h1:26379,h2:26379/mymaster")
			}
			opts.MasterName = master
			if strings.HasPrefix(q, "db=") {
				fmt.Sscanf(q[3:], "%d", &opts.DB)
			}
		} else {
			opts.IsClusterMode = true
		}
	default:
		return nil, fmt.Errorf("redis_url %q: use redis://, rediss://, unix://, redis-sentinel:// or redis-cluster://", url)
	}
	return redis.NewUniversalClient(opts), nil
}
