package relay

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
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

	// OnResult, when set, is called after each recipient's outcome.
	OnResult func(id, rcpt, status, category string, latency time.Duration)

	mu       sync.Mutex
	due      dueHeap
	queued   map[string]bool // in the heap or in flight
	wake     chan struct{}
	work     chan string
	domains  map[string]chan struct{}
	pool     *connPool
	stopping bool
	wg       sync.WaitGroup
}

// New returns a relay over sp. Call Run to start it.
func New(cfg Config, sp *spool.Spool, dns MXResolver, sts *MTASTS, sup *Suppressions, explain Explainer, log *slog.Logger) *Relay {
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultConfig.Workers
	}
	if cfg.PerDomain <= 0 {
		cfg.PerDomain = DefaultConfig.PerDomain
	}
	if len(cfg.Retry) == 0 {
		cfg.Retry = DefaultConfig.Retry
	}
	if explain == nil {
		explain = func(string) (string, string, string) { return "unknown", "", "" }
	}
	return &Relay{cfg: cfg, spool: sp, dns: dns, sts: sts, suppress: sup, explain: explain, log: log, now: time.Now,
		queued: map[string]bool{}, wake: make(chan struct{}, 1), work: make(chan string),
		domains: map[string]chan struct{}{}, pool: newConnPool(cfg.IdleConnTimeout)}
}

// Suppressions returns the relay's suppression list (nil when off).
func (r *Relay) Suppressions() *Suppressions { return r.suppress }

// Enqueued schedules a new message now (spool.OnEnqueue).
func (r *Relay) Enqueued(id string) { r.schedule(id, r.now()) }

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
		r.schedule(id, st.NextTry)
	}
}

func (r *Relay) schedule(id string, at time.Time) {
	r.mu.Lock()
	if r.queued[id] {
		// Already waiting: move it earlier if asked.
		for _, it := range r.due {
			if it.id == id && at.Before(it.at) {
				it.at = at
				heap.Fix(&r.due, it.index)
			}
		}
		r.mu.Unlock()
		return
	}
	r.queued[id] = true
	heap.Push(&r.due, &dueItem{id: id, at: at})
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run loads the queue, then delivers until ctx is done. Workers finish the
// message they are on (a delivery is not cut in the middle) and stop.
func (r *Relay) Run(ctx context.Context) error {
	r.Kick()
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
		r.mu.Lock()
		var next *dueItem
		if len(r.due) > 0 {
			next = r.due[0]
		}
		r.mu.Unlock()
		wait := time.Hour
		if next != nil {
			wait = next.at.Sub(r.now())
		}
		if next != nil && wait <= 0 {
			r.mu.Lock()
			heap.Pop(&r.due)
			r.mu.Unlock()
			select {
			case r.work <- next.id:
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
		next, err := r.attempt(ctx, id)
		r.mu.Lock()
		delete(r.queued, id)
		r.mu.Unlock()
		if err != nil && !errors.Is(err, spool.ErrNotFound) {
			r.log.Error("relay: attempt failed", "id", id, "err", err)
			next = r.now().Add(r.cfg.Retry[0])
		}
		if !next.IsZero() {
			r.schedule(id, next)
		}
	}
}

// backoff is the wait after the n-th attempt (1-based), with ±10% jitter.
func (r *Relay) backoff(n int) time.Duration {
	d := r.cfg.Retry[min(n-1, len(r.cfg.Retry)-1)]
	j := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + j
}

// domainSlot takes one of the destination's connection slots.
func (r *Relay) domainSlot(ctx context.Context, domain string) (func(), error) {
	r.mu.Lock()
	ch := r.domains[domain]
	if ch == nil {
		ch = make(chan struct{}, r.cfg.PerDomain)
		r.domains[domain] = ch
	}
	r.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Stats is a snapshot for metrics and readiness.
type Stats struct {
	Queued int
	Oldest time.Time
}

type dueItem struct {
	id    string
	at    time.Time
	index int
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
