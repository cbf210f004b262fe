package relay

import (
	"context"
	"sync"
	"time"
)

// connPool keeps sessions that finished a transaction for reuse by the
// next message to the same server, for a short idle time. A session is
// handed out only to a message whose policy it satisfies: one opened in
// clear or with an unverified certificate never carries mail for a domain
// with an enforced MTA-STS policy.
type connPool struct {
	idle time.Duration

	mu    sync.Mutex
	conns map[poolKey][]pooled // idle sessions, newest last
}

// poolKey is the server a session talks to: the MX (or smarthost) name it
// was opened for, which its TLS certificate was checked against, and the
// address it is connected to. What a message needs of the session's
// security is not part of the key: a verified session serves any message,
// so get matches it against the message's policy (conn.satisfies).
type poolKey struct{ host, addr string }

type pooled struct {
	c     *conn
	since time.Time
}

func newConnPool(idle time.Duration) *connPool {
	return &connPool{idle: idle, conns: map[poolKey][]pooled{}}
}

// get returns an idle session for key that satisfies t, or nil.
func (p *connPool) get(key poolKey, t target) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.conns[key]
	for i := len(list) - 1; i >= 0; i-- {
		pc := list[i]
		if time.Since(pc.since) >= p.idle {
			continue // the reaper closes it
		}
		if !pc.c.satisfies(t) {
			continue
		}
		p.conns[key] = append(list[:i:i], list[i+1:]...)
		if len(p.conns[key]) == 0 {
			delete(p.conns, key)
		}
		return pc.c
	}
	return nil
}

func (p *connPool) put(key poolKey, c *conn) {
	if p.idle <= 0 {
		c.quit()
		return
	}
	p.mu.Lock()
	p.conns[key] = append(p.conns[key], pooled{c, time.Now()})
	p.mu.Unlock()
}

// reap closes sessions idle for longer than the idle time until ctx ends.
func (p *connPool) reap(ctx context.Context) {
	if p.idle <= 0 {
		return
	}
	tick := time.NewTicker(p.idle / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var old []*conn
		p.mu.Lock()
		for k, list := range p.conns {
			kept := list[:0]
			for _, pc := range list {
				if time.Since(pc.since) < p.idle {
					kept = append(kept, pc)
				} else {
					old = append(old, pc.c)
				}
			}
			if len(kept) == 0 {
				delete(p.conns, k)
			} else {
				p.conns[k] = kept
			}
		}
		p.mu.Unlock()
		for _, c := range old {
			go c.quit()
		}
	}
}

// closeAll ends every idle session with QUIT.
func (p *connPool) closeAll() {
	p.mu.Lock()
	var all []*conn
	for k, list := range p.conns {
		for _, pc := range list {
			all = append(all, pc.c)
		}
		delete(p.conns, k)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range all {
		wg.Add(1)
		go func() { defer wg.Done(); c.quit() }()
	}
	wg.Wait()
}
