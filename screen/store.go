package screen

import (
	"context"
	"errors"
	"time"
)

// ErrStore wraps every failure of a shared store (Redis down or slow), so
// that callers can apply the configured on_store_error policy.
var ErrStore = errors.New("quota store unavailable")

// Scope is one counter a charge is checked against: a login's or a domain's.
type Scope struct {
	Key   string // "login:info@example.test", "domain:example.test"
	Limit int    // recipients per window; 0 means unlimited
}

// Charge is one request against the store. All scopes of a charge share Tag,
// so that in a Redis Cluster they live in one slot and are changed by one
// atomic script.
type Charge struct {
	Tag    string
	Scopes []Scope
	Txn    string // the transaction's reservation handle
	N      int    // recipients to reserve (Reserve) or to charge (Commit)
	ID     string // queue id of the accepted message (Commit)
}

// Refusal says which scope is full and when the charge would fit.
type Refusal struct {
	Scope   Scope
	Used    int
	NextFit time.Time
}

// Usage is a scope's state for `sluice quota show`.
type Usage struct {
	Used     int       // charged within the window
	Reserved int       // held in the store by transactions in progress (not those granted from a known room, see rooms)
	Resets   time.Time // when the oldest charge leaves the window (zero: nothing charged)
}

// QuotaStore keeps sliding-window counters. Reserve holds capacity for a
// transaction in progress (checked at RCPT), Commit turns the reservation
// into a charge at acceptance, Release gives it back (a refused or aborted
// message costs nothing). Reservations expire by themselves after the hold
// time, so a dropped connection cannot leak capacity for long.
type QuotaStore interface {
	Reserve(ctx context.Context, c Charge) (*Refusal, error)
	Commit(ctx context.Context, c Charge) (*Refusal, error)
	Release(ctx context.Context, c Charge) error
	Usage(ctx context.Context, tag, key string) (Usage, error)
	Reset(ctx context.Context, tag, key string) error
	// Count adds n under a fresh id and returns the total within the
	// window (for event counters such as repeated content).
	Count(ctx context.Context, tag, key, id string, n int) (int, error)
}

// StoreConfig are the timings every store shares.
type StoreConfig struct {
	Window time.Duration // the sliding window: one hour in production
	Hold   time.Duration // how long a reservation lives without a commit
}
