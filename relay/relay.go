package relay

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"sluice/relay/spool"
)

// Config is the [relay] section.
type Config struct {
	Mode              string // "mx" or "smarthost"
	MXPort            int    // 25; tests point it at a loopback port
	Smarthost         string // host:port
	SmarthostUsername string
	SmarthostPassword string
	SmarthostTLS      string // "starttls" (default) or "implicit"
	SmarthostInsecure bool   // skip certificate verification (tests only)
	HELO              string
	Hostname          string   // Reporting-MTA of DSNs, MAILER-DAEMON@Hostname
	SourceIPs         []net.IP // local addresses to send from (empty: any)
	Workers           int      // messages in delivery at once
	PerDomain         int      // connections per destination domain
	Retry             []time.Duration
	MaxAge            time.Duration // give up (failure DSN) after
	WarnAfter         time.Duration // delay DSN after; 0 off
	ConnectTimeout    time.Duration
	CommandTimeout    time.Duration
	IdleConnTimeout   time.Duration // keep a connection for reuse this long
}

// DefaultConfig is the embedded default.
var DefaultConfig = Config{
	Mode: "mx", MXPort: 25, SmarthostTLS: "starttls", Workers: 100, PerDomain: 20,
	Retry:  []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute, time.Hour},
	MaxAge: 5 * 24 * time.Hour, WarnAfter: 4 * time.Hour,
	ConnectTimeout: 30 * time.Second, CommandTimeout: 5 * time.Minute, IdleConnTimeout: 30 * time.Second,
}

// MXResolver is the DNS the relay needs (relay/resolver.Resolver).
type MXResolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Explainer turns a reply into a category and advice for DSNs and logs
// (relay/explain).
type Explainer func(reply string) (category, meaning, action string)

// Relay delivers the spool: a scheduler ordered by next attempt, a bounded
// pool of workers, per-destination limits and reused connections.
type Relay struct {
	cfg      Config
	spool    *spool.Spool
	dns      MXResolver
	log      *slog.Logger
	explain  Explainer
	sts      *MTASTS
	suppress *Suppressions
	now      func() time.Time

	// OnResult, when set, is called after each recipient's outcome, with
	// the message's envelope (not to be changed).
	OnResult func(env *spool.Envelope, rcpt, status, category string, latency time.Duration)

	mu      sync.Mutex
	due     dueHeap
	queued  map[string]*dueItem // in the heap, or nil while in flight
	wake    chan struct{}
	work    chan string
	fresh   atomic.Int64 // dueItems with fresh set (Backlog reads it without r.mu)
	domains map[string]*slots
	pool    *connPool
	wg      sync.WaitGroup
}

// New returns a relay over sp. Call Run to start it. Zero values in cfg
// take DefaultConfig's (WarnAfter 0 and IdleConnTimeout 0 mean off).
func New(cfg Config, sp *spool.Spool, dns MXResolver, sts *MTASTS, sup *Suppressions, explain Explainer, log *slog.Logger) *Relay {
	def := DefaultConfig
	for _, f := range []struct {
		v *int
		d int
	}{{&cfg.Workers, def.Workers}, {&cfg.PerDomain, def.PerDomain}, {&cfg.MXPort, def.MXPort}} {
		if *f.v <= 0 {
			*f.v = f.d
		}
	}
	for _, f := range []struct {
		v *time.Duration
		d time.Duration
	}{{&cfg.MaxAge, def.MaxAge}, {&cfg.ConnectTimeout, def.ConnectTimeout}, {&cfg.CommandTimeout, def.CommandTimeout}} {
		if *f.v <= 0 {
			*f.v = f.d
		}
	}
	if len(cfg.Retry) == 0 {
		cfg.Retry = def.Retry
	}
	if cfg.Mode == "" {
		cfg.Mode = def.Mode
	}
	if explain == nil {
		explain = func(string) (string, string, string) { return "unknown", "", "" }
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Relay{cfg: cfg, spool: sp, dns: dns, sts: sts, suppress: sup, explain: explain, log: log, now: time.Now,
		queued: map[string]*dueItem{}, wake: make(chan struct{}, 1), work: make(chan string),
		domains: map[string]*slots{}, pool: newConnPool(cfg.IdleConnTimeout)}
}

// Suppressions returns the relay's suppression list (nil when off).
func (r *Relay) Suppressions() *Suppressions { return r.suppress }

// Enqueued schedules a new message now (spool.OnEnqueue).
func (r *Relay) Enqueued(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.queued[id]; ok {
		return
	}
	r.push(id, r.now(), 0)
	r.queued[id].fresh = true
	r.fresh.Add(1)
}

// Workers is how many messages the relay delivers at once (its
// configured workers, or the default).
func (r *Relay) Workers() int { return r.cfg.Workers }

// Backlog is how many new messages wait for a worker to begin their first
// attempt (the one being handed to a worker aside): it grows when mail
// comes in faster than it goes out, which submit answers by slowing new
// transactions down (in-flow delay).
func (r *Relay) Backlog() int { return int(r.fresh.Load()) }

// Kick rereads the queue directory (after `sluice queue retry/release`).
func (r *Relay) Kick() {
	ids, err := r.spool.List()
	if err != nil {
		r.log.Error("relay: cannot list the spool", "err", err)
		return
	}
	for _, id := range ids {
		env, rc, err := r.spool.Open(id)
		if err != nil {
			continue
		}
		rc.Close()
		st, err := r.spool.LoadState(id, env)
		if err != nil || st.Held {
			continue
		}
		r.schedule(id, st.NextTry, st.Attempts)
	}
}

// schedule puts id in the heap for at, or moves it earlier if it is
// waiting already. attempts is how many attempts the state that gave at
// had seen: a state read before the latest attempt (Kick racing with a
// worker) is stale and changes nothing. A message in flight is left to its
// worker, which schedules it from the state it saves.
func (r *Relay) schedule(id string, at time.Time, attempts int) {
	r.mu.Lock()
	if it, ok := r.queued[id]; ok {
		if it != nil && attempts >= it.attempts && at.Before(it.at) {
			it.at = at
			heap.Fix(&r.due, it.index)
		}
		r.mu.Unlock()
		return
	}
	r.push(id, at, attempts)
	r.mu.Unlock()
}

// push adds a new entry; r.mu is held.
func (r *Relay) push(id string, at time.Time, attempts int) {
	it := &dueItem{id: id, at: at, attempts: attempts}
	r.queued[id] = it
	heap.Push(&r.due, it)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// finished ends the flight of id and, unless next is zero, schedules its
// next attempt, in one step so that no Kick can slip in between.
func (r *Relay) finished(id string, next time.Time, attempts int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.queued, id)
	if !next.IsZero() {
		r.push(id, next, attempts)
	}
}

// popDue takes the first message if it is due; otherwise it returns how
// long until it is (an hour when the heap is empty).
func (r *Relay) popDue() (string, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.due) == 0 {
		return "", time.Hour
	}
	if wait := r.due[0].at.Sub(r.now()); wait > 0 {
		return "", wait
	}
	it := heap.Pop(&r.due).(*dueItem)
	r.queued[it.id] = nil // in flight
	if it.fresh {
		r.fresh.Add(-1)
	}
	return it.id, 0
}

// Run loads the queue, then delivers until ctx is done. Workers finish the
// message they are on (a delivery is not cut in the middle) and stop.
func (r *Relay) Run(ctx context.Context) error {
	r.Kick()
	reapCtx, stopReap := context.WithCancel(context.Background())
	go r.pool.reap(reapCtx)
	defer stopReap()
	for i := 0; i < r.cfg.Workers; i++ {
		r.wg.Add(1)
		go r.worker(ctx)
	}
	defer func() {
		close(r.work)
		r.wg.Wait()
		r.pool.closeAll()
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		id, wait := r.popDue()
		if id != "" {
			select {
			case r.work <- id:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-timer.C:
		}
	}
}

func (r *Relay) worker(ctx context.Context) {
	defer r.wg.Done()
	for id := range r.work {
		next, attempts, err := r.attempt(ctx, id)
		if err != nil && !errors.Is(err, spool.ErrNotFound) {
			r.log.Error("relay: attempt failed", "id", id, "err", err)
			if next.IsZero() {
				next = r.now().Add(r.cfg.Retry[0])
			}
		}
		r.finished(id, next, attempts)
	}
}

// backoff is the wait after the n-th attempt (1-based), with ±10% jitter.
func (r *Relay) backoff(n int) time.Duration {
	d := r.cfg.Retry[min(n-1, len(r.cfg.Retry)-1)]
	j := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + j
}

// domainSlot takes one of the destination's connection slots. A
// destination's semaphore lives only while someone holds or waits for it,
// so the map does not grow with every domain ever mailed.
func (r *Relay) domainSlot(ctx context.Context, domain string) (func(), error) {
	r.mu.Lock()
	s := r.domains[domain]
	if s == nil {
		s = &slots{ch: make(chan struct{}, r.cfg.PerDomain)}
		r.domains[domain] = s
	}
	s.users++
	r.mu.Unlock()
	done := func() {
		r.mu.Lock()
		if s.users--; s.users == 0 {
			delete(r.domains, domain)
		}
		r.mu.Unlock()
	}
	select {
	case s.ch <- struct{}{}:
		return func() { <-s.ch; done() }, nil
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
}

// slots is one destination's connection semaphore.
type slots struct {
	ch    chan struct{}
	users int // holding or waiting; guarded by Relay.mu
}

type dueItem struct {
	id       string
	at       time.Time
	attempts int // of the state at was read from
	index    int
	fresh    bool // a new message (Enqueued), waiting for its first attempt
}

type dueHeap []*dueItem

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *dueHeap) Push(x any)        { it := x.(*dueItem); it.index = len(*h); *h = append(*h, it) }
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
