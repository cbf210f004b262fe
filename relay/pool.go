package relay

import (
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// connPool keeps connections that finished a transaction for reuse by the
// next message to the same server, for a short idle time.
type connPool struct {
	idle time.Duration

	mu    sync.Mutex
	conns map[string][]pooled
}

type pooled struct {
	c     *smtp.Client
	since time.Time
}

func newConnPool(idle time.Duration) *connPool {
	p := &connPool{idle: idle, conns: map[string][]pooled{}}
	if idle > 0 {
		go p.reap()
	}
	return p
}

func (p *connPool) get(key string) *smtp.Client {
	for {
		p.mu.Lock()
		list := p.conns[key]
		if len(list) == 0 {
			p.mu.Unlock()
			return nil
		}
		pc := list[len(list)-1]
		p.conns[key] = list[:len(list)-1]
		p.mu.Unlock()
		if time.Since(pc.since) < p.idle {
			return pc.c
		}
		pc.c.Close()
	}
}

func (p *connPool) put(key string, c *smtp.Client) {
	if p.idle <= 0 {
		c.Quit()
		return
	}
	p.mu.Lock()
	p.conns[key] = append(p.conns[key], pooled{c, time.Now()})
	p.mu.Unlock()
}

func (p *connPool) reap() {
	for range time.Tick(p.idle / 2) {
		p.mu.Lock()
		for k, list := range p.conns {
			kept := list[:0]
			for _, pc := range list {
				if time.Since(pc.since) < p.idle {
					kept = append(kept, pc)
				} else {
					go pc.c.Quit()
				}
			}
			if len(kept) == 0 {
				delete(p.conns, k)
			} else {
				p.conns[k] = kept
			}
		}
		p.mu.Unlock()
	}
}

func (p *connPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, list := range p.conns {
		for _, pc := range list {
			pc.c.Quit()
		}
		delete(p.conns, k)
	}
}
