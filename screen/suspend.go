package screen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Suspension is a login's suspension as a suspension store records it:
// why (the compromise rule's sentence) and since when.
type Suspension struct {
	Login  string
	Reason string
	Since  time.Time
}

// SuspensionPrefix begins every reason the compromise rule gives, and so
// tells its suspensions from an operator's or a panel's "disabled".
const SuspensionPrefix = "suspended for suspected abuse: "

// SuspensionTTL is how long a suspension that nobody lifts is kept: 90
// days (a lift is remembered as long). After that the store forgets it; a
// login of the user file stays disabled there. A suspended password is
// expected to be changed, and the login enabled, long before.
const SuspensionTTL = 90 * 24 * time.Hour

// suspRecord is one login's entry as stored: a suspension, or the mark
// that an operator lifted one (State "lifted"), which tells instances
// whose own user file still holds the suspension that it is over.
type suspRecord struct {
	State  string     `json:"state"` // "suspended" or "lifted"
	Login  string     `json:"login"`
	Reason string     `json:"reason,omitempty"`
	Since  time.Time  `json:"since"`
	Lifted *time.Time `json:"lifted,omitempty"`
}

const (
	suspActive = "suspended"
	suspLifted = "lifted"
)

// The suspension stores (RedisSuspensions, FileSuspensions) share one
// method set:
//
//	Record(ctx, login, reason) (new bool, err)           suspend; new: it was not suspended
//	State(ctx, login) (*Suspension, liftedAt, error)     nil when not suspended, and when it was last lifted
//	Suspended(ctx, login) (reason string, err error)     "" when not suspended
//	Lift(ctx, login) (lifted bool, err error)            lifted: it was suspended
//
// Each is one round trip. Logins are compared in lower case. Every error
// wraps ErrStore, so that callers apply on_store_error.

// RedisSuspensions records suspensions in Redis, so that every instance
// refuses a login one of them suspended:
//
//	sluice:susp:{DOMAIN}:LOGIN   JSON {state, login, reason, since, lifted}, PX = TTL
//
// hash-tagged with the login's domain like the quota keys. Every write
// sets the TTL: no key lives forever.
type RedisSuspensions struct {
	rdb redis.UniversalClient
	ttl time.Duration
}

// NewRedisSuspensions uses rdb; ttl 0 means SuspensionTTL.
func NewRedisSuspensions(rdb redis.UniversalClient, ttl time.Duration) *RedisSuspensions {
	if ttl <= 0 {
		ttl = SuspensionTTL
	}
	return &RedisSuspensions{rdb: rdb, ttl: ttl}
}

// suspensionKey is the Redis key of a login's suspension.
func suspensionKey(login string) string {
	login = strings.ToLower(login)
	return "sluice:susp:{" + domainOf(login) + "}:" + login
}

// recordScript sets a suspension unless one is there (a lift mark is
// replaced): 1 when set, 0 when the login was suspended already.
var recordScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and not string.find(v, '"state":"lifted"', 1, true) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// liftScript replaces whatever is there with a lift mark and returns the
// old value (false: none).
var liftScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return v
`)

// Record suspends login with reason unless it is suspended already (the
// first reason and time stay). new reports whether this call suspended it.
func (r *RedisSuspensions) Record(ctx context.Context, login, reason string) (bool, error) {
	login = strings.ToLower(login)
	val, _ := json.Marshal(suspRecord{State: suspActive, Login: login, Reason: reason, Since: time.Now().UTC()})
	n, err := recordScript.Run(ctx, r.rdb, []string{suspensionKey(login)}, val, r.ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("%w: suspension record: %v", ErrStore, err)
	}
	return n == 1, nil
}

// State returns the login's suspension (nil: none) and when a suspension
// of it was last lifted (zero: not within the TTL).
func (r *RedisSuspensions) State(ctx context.Context, login string) (*Suspension, time.Time, error) {
	login = strings.ToLower(login)
	return stateOf(login, r.rdb.Get(ctx, suspensionKey(login)))
}

// queueState queues State's GET of login on pipe; after pipe.Exec, the
// function returned gives State's answer.
func (r *RedisSuspensions) queueState(ctx context.Context, pipe redis.Pipeliner, login string) func() (*Suspension, time.Time, error) {
	login = strings.ToLower(login)
	get := pipe.Get(ctx, suspensionKey(login))
	return func() (*Suspension, time.Time, error) { return stateOf(login, get) }
}

// stateOf is State's answer from the GET of login's key.
func stateOf(login string, get *redis.StringCmd) (*Suspension, time.Time, error) {
	val, err := get.Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: suspension lookup: %v", ErrStore, err)
	}
	sus, lifted := decodeSusp(login, val)
	return sus, lifted, nil
}

// PrefetchedSuspensions is a RedisSuspensions with one login's State read
// ahead (RedisGuard.LockedSuspension reads it with the lockout check):
// State and Suspended of that login give what was read, a store error
// included, without asking Redis again; of any other login (a backend may
// name the login otherwise than the client typed it), they ask Redis as
// usual. Record and Lift go to Redis. One serves one AUTH.
type PrefetchedSuspensions struct {
	*RedisSuspensions
	read     bool   // login's answer was read ahead
	login    string // lower case
	sus      *Suspension
	liftedAt time.Time
	err      error
}

// State implements the store's State: login's answer as read ahead, or
// Redis's for another login.
func (p *PrefetchedSuspensions) State(ctx context.Context, login string) (*Suspension, time.Time, error) {
	if !p.read || strings.ToLower(login) != p.login {
		return p.RedisSuspensions.State(ctx, login)
	}
	return p.sus, p.liftedAt, p.err
}

// Suspended returns the reason login is suspended, or "" (see State).
func (p *PrefetchedSuspensions) Suspended(ctx context.Context, login string) (string, error) {
	return reasonOf(p.State(ctx, login))
}

// decodeSusp reads a stored value; one that is not ours (written by hand)
// counts as a suspension.
func decodeSusp(login string, val []byte) (*Suspension, time.Time) {
	var rec suspRecord
	if json.Unmarshal(val, &rec) != nil || rec.State == "" {
		return &Suspension{Login: login, Reason: "suspended: " + string(val)}, time.Time{}
	}
	return rec.suspension(login)
}

// reasonOf is the reason of a State answer ("" when not suspended).
func reasonOf(s *Suspension, _ time.Time, err error) (string, error) {
	if s == nil || err != nil {
		return "", err
	}
	return s.Reason, nil
}

func (rec suspRecord) suspension(login string) (*Suspension, time.Time) {
	if rec.State == suspLifted {
		var at time.Time
		if rec.Lifted != nil {
			at = *rec.Lifted
		}
		return nil, at
	}
	return &Suspension{Login: login, Reason: rec.Reason, Since: rec.Since}, time.Time{}
}

// Suspended returns the reason login is suspended, or "".
func (r *RedisSuspensions) Suspended(ctx context.Context, login string) (string, error) {
	return reasonOf(r.State(ctx, login))
}

// Lift ends the login's suspension on every instance and leaves the mark
// that it was lifted (for the TTL), also when the store had none: an
// instance whose own user file still says suspended then lets it in.
func (r *RedisSuspensions) Lift(ctx context.Context, login string) (bool, error) {
	login = strings.ToLower(login)
	now := time.Now().UTC()
	val, _ := json.Marshal(suspRecord{State: suspLifted, Login: login, Since: now, Lifted: &now})
	old, err := liftScript.Run(ctx, r.rdb, []string{suspensionKey(login)}, val, r.ttl.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: suspension lift: %v", ErrStore, err)
	}
	sus, _ := decodeSusp(login, []byte(old))
	return sus != nil, nil
}
