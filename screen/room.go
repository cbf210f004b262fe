package screen

import (
	"strconv"
	"strings"
	"sync"
	"time"
)

// roomTTL is how long an answer of Redis about a charge's room is used
// for RCPT pre-checks without asking again.
const roomTTL = 5 * time.Second

// rooms remembers, per charge (a login's scopes and their limits), the
// room Redis last reported: recipients that still fit in the window. While
// that answer is fresh and the room is well above what a transaction asks
// for, RCPT's pre-check is answered here instead of by a reservation in
// Redis, which saves a round trip and a script run a message. The charge
// at the end of DATA is still checked by Redis against the limit, so the
// quota is never exceeded: a race this estimate loses (other instances
// sending from the same login near its limit) refuses at the end of DATA,
// with the same 451 4.7.1, rather than at RCPT. Near the limit (the last
// quarter of it) every RCPT reserves in Redis as before.
type rooms struct {
	mu    sync.Mutex
	m     map[string]roomEntry
	sweep int // len(m) at which stale entries are dropped
}

type roomEntry struct {
	room int // recipients that fit, less those granted here since
	at   time.Time
}

// roomKey names c's scopes and limits: a limit changed by a reload misses
// the old answer.
func roomKey(c Charge) string {
	var b strings.Builder
	b.WriteString(c.Tag)
	for _, s := range c.Scopes {
		b.WriteByte(0)
		b.WriteString(s.Key)
		b.WriteByte('=')
		b.WriteString(strconv.Itoa(s.Limit))
	}
	return b.String()
}

// unlimited reports whether no scope of c has a limit: there is no room
// to hold, and a reservation could never be refused.
func unlimited(c Charge) bool {
	for _, s := range c.Scopes {
		if s.Limit > 0 {
			return false
		}
	}
	return true
}

// margin is the room that must remain after a grant made here: a quarter
// of the smallest limit, at least 1.
func margin(c Charge) int {
	least := 0
	for _, s := range c.Scopes {
		if s.Limit > 0 && (least == 0 || s.Limit < least) {
			least = s.Limit
		}
	}
	return max(least/4, 1)
}

// take grants c's recipients from a fresh answer with room to spare, and
// counts them off it; false: ask Redis.
func (r *rooms) take(c Charge, now time.Time) bool {
	key := roomKey(c)
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[key]
	if !ok || now.Sub(e.at) >= roomTTL || now.Before(e.at) || e.room-c.N < margin(c) {
		return false
	}
	e.room -= c.N
	r.m[key] = e
	return true
}

// note keeps what an answer of the script to a reserve or a commit says of
// c's room: {0, now, room} when it fitted (shorter answers say nothing of
// it), {1, ...} when it did not.
func (r *rooms) note(c Charge, res []int64, now time.Time) {
	var room int
	switch {
	case len(res) >= 3 && res[0] == 0:
		room = int(res[2])
	case len(res) > 0 && res[0] == 1:
		room = 0
	default:
		return
	}
	key := roomKey(c)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]roomEntry)
	}
	r.m[key] = roomEntry{room: room, at: now}
	if len(r.m) >= r.sweep {
		for k, e := range r.m {
			if now.Sub(e.at) >= roomTTL {
				delete(r.m, k)
			}
		}
		r.sweep = max(2*len(r.m), 4096)
	}
}
