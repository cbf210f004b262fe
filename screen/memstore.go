package screen

import (
	"context"
	"sync"
	"time"
)

// MemoryStore is the QuotaStore of a single instance with no Redis: the
// same sliding-window semantics as the Redis store, in process memory.
type MemoryStore struct {
	cfg StoreConfig
	now func() time.Time

	mu     sync.Mutex
	scopes map[string]*memScope
	calls  int
	seen   map[string]map[string]time.Time // recipient history per login
}

type memCharge struct {
	at time.Time
	n  int
	id string
}

type memScope struct {
	log      []memCharge // oldest first
	sum      int
	res      map[string]memRes
	resSum   int
	lastUsed time.Time
}

type memRes struct {
	n       int
	expires time.Time
}

// NewMemoryStore returns an empty in-memory store.
func NewMemoryStore(cfg StoreConfig) *MemoryStore {
	return &MemoryStore{cfg: cfg, now: time.Now, scopes: map[string]*memScope{}}
}

func (m *MemoryStore) scope(tag, key string, now time.Time) *memScope {
	k := tag + "\x00" + key
	s := m.scopes[k]
	if s == nil {
		s = &memScope{res: map[string]memRes{}}
		m.scopes[k] = s
	}
	s.clean(now, m.cfg.Window)
	s.lastUsed = now
	return s
}

func (s *memScope) clean(now time.Time, window time.Duration) {
	i := 0
	for i < len(s.log) && !s.log[i].at.After(now.Add(-window)) {
		s.sum -= s.log[i].n
		i++
	}
	if i > 0 {
		s.log = append(s.log[:0], s.log[i:]...)
	}
	for txn, r := range s.res {
		if !r.expires.After(now) {
			s.resSum -= r.n
			delete(s.res, txn)
		}
	}
}

// nextFit is when enough charges will have left the window for n more to
// fit under limit.
func (s *memScope) nextFit(now time.Time, window time.Duration, used, n, limit int, hold time.Duration) time.Time {
	need := used + n - limit
	acc := 0
	for _, c := range s.log {
		acc += c.n
		if acc >= need {
			return c.at.Add(window)
		}
	}
	return now.Add(hold)
}

// Reserve implements QuotaStore.
func (m *MemoryStore) Reserve(_ context.Context, c Charge) (*Refusal, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.gc(now)
	scopes := make([]*memScope, len(c.Scopes))
	for i, sc := range c.Scopes {
		s := m.scope(c.Tag, sc.Key, now)
		scopes[i] = s
		used := s.sum + s.resSum
		if sc.Limit > 0 && used+c.N > sc.Limit {
			return &Refusal{Scope: sc, Used: used, NextFit: s.nextFit(now, m.cfg.Window, used, c.N, sc.Limit, m.cfg.Hold)}, nil
		}
	}
	for _, s := range scopes {
		r := s.res[c.Txn]
		r.n += c.N
		r.expires = now.Add(m.cfg.Hold)
		s.res[c.Txn] = r
		s.resSum += c.N
	}
	return nil, nil
}

// Commit implements QuotaStore.
func (m *MemoryStore) Commit(_ context.Context, c Charge) (*Refusal, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	scopes := make([]*memScope, len(c.Scopes))
	for i, sc := range c.Scopes {
		s := m.scope(c.Tag, sc.Key, now)
		scopes[i] = s
		used := s.sum + s.resSum - s.res[c.Txn].n
		if sc.Limit > 0 && used+c.N > sc.Limit {
			return &Refusal{Scope: sc, Used: used, NextFit: s.nextFit(now, m.cfg.Window, used, c.N, sc.Limit, m.cfg.Hold)}, nil
		}
	}
	for _, s := range scopes {
		if r, ok := s.res[c.Txn]; ok {
			s.resSum -= r.n
			delete(s.res, c.Txn)
		}
		s.log = append(s.log, memCharge{at: now, n: c.N, id: c.ID})
		s.sum += c.N
	}
	return nil, nil
}

// Release implements QuotaStore.
func (m *MemoryStore) Release(_ context.Context, c Charge) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, sc := range c.Scopes {
		s := m.scope(c.Tag, sc.Key, now)
		if r, ok := s.res[c.Txn]; ok {
			s.resSum -= r.n
			delete(s.res, c.Txn)
		}
	}
	return nil
}

// Refund takes back the charge of message c.ID.
func (m *MemoryStore) Refund(_ context.Context, c Charge) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, sc := range c.Scopes {
		s := m.scope(c.Tag, sc.Key, now)
		for i, e := range s.log {
			if e.id == c.ID && e.n == c.N {
				s.log = append(s.log[:i], s.log[i+1:]...)
				s.sum -= e.n
				break
			}
		}
	}
	return nil
}

// Count implements QuotaStore.
func (m *MemoryStore) Count(_ context.Context, tag, key, id string, n int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.gc(now)
	s := m.scope(tag, key, now)
	s.log = append(s.log, memCharge{at: now, n: n, id: id})
	s.sum += n
	return s.sum, nil
}

// Usage implements QuotaStore.
func (m *MemoryStore) Usage(_ context.Context, tag, key string) (Usage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	s := m.scope(tag, key, now)
	u := Usage{Used: s.sum, Reserved: s.resSum}
	if len(s.log) > 0 {
		u.Resets = s.log[0].at.Add(m.cfg.Window)
	}
	return u, nil
}

// Reset implements QuotaStore.
func (m *MemoryStore) Reset(_ context.Context, tag, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.scopes, tag+"\x00"+key)
	return nil
}

// gc drops idle scopes now and then: like the Redis keys' TTLs, nothing
// stays after it stopped mattering.
func (m *MemoryStore) gc(now time.Time) {
	m.calls++
	if m.calls%1024 != 0 {
		return
	}
	for k, s := range m.scopes {
		if now.Sub(s.lastUsed) > m.cfg.Window+m.cfg.Hold {
			delete(m.scopes, k)
		}
	}
}
