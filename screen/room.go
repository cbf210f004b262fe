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
// that answer is fresh and the room less what this instance has granted
// since (its open transactions' local grants, kept in a ledger) stays at
// or above a quarter of the limit, RCPT's pre-check is answered here
// instead of by a reservation in Redis, which saves a round trip and a
// script run a message. Once a transaction's next recipient does not fit
// that way, it reserves in Redis for that recipient and for all it was
// granted here, so Redis checks the whole transaction and the refusal
// falls at RCPT on the recipient that does not fit, as without the cache.
// The charge at the end of DATA is always checked by Redis against the
// limit, so the quota is never exceeded: what the estimate cannot see
// (other instances sending from the same login near its limit) is refused
// at the end of DATA, with the same 451 4.7.1, rather than at RCPT.
// Charges with a domain total as well are never granted here: other logins
// of the domain use its room unseen.
type rooms struct {
	mu    sync.Mutex
	m     map[string]*roomEntry
	txns  map[string]*localGrant // by transaction
	sweep int                    // len(m)+len(txns) at which stale entries are dropped
	// life bounds how long a local grant is kept for a transaction that
	// neither committed nor released (submit releases at RSET and logout,
	// so only a lost session leaves one): as long as a reservation in
	// Redis lives (NewRedisStore sets it; grantLife when zero).
	life time.Duration
}

type roomEntry struct {
	room    int       // recipients that fit, as Redis last reported
	at      time.Time // when (this instance's clock)
	redisMs int64     // when, by Redis's clock: an older answer noted later is ignored
	granted int       // recipients granted here since and not yet charged or released
}

// localGrant is what one open transaction was granted here.
type localGrant struct {
	key   string // its roomEntry
	n     int
	at    time.Time
	redis bool // it also reserved in Redis
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

// limited is how many scopes of c have a limit.
func limited(c Charge) int {
	n := 0
	for _, s := range c.Scopes {
		if s.Limit > 0 {
			n++
		}
	}
	return n
}

// margin is the room that must remain after a grant made here: a quarter
// of the limit, at least 1.
func margin(c Charge) int {
	for _, s := range c.Scopes {
		if s.Limit > 0 {
			return max(s.Limit/4, 1)
		}
	}
	return 1
}

// take grants c's recipients from a fresh answer with room to spare, and
// enters them in the ledger. false: ask Redis, to reserve held more (what
// c's transaction was granted here, which the reservation then takes
// over) and to check others more besides (what this instance granted to
// its other open transactions, which Redis does not know of).
func (r *rooms) take(c Charge, now time.Time) (ok bool, held, others int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.txns[c.Txn]
	if g != nil {
		held = g.n
	}
	key := roomKey(c)
	e := r.m[key]
	if e != nil {
		others = e.granted
		if g != nil && g.key == key {
			others -= held // within one key granted includes held
		}
	}
	if limited(c) != 1 || e == nil || now.Sub(e.at) >= roomTTL || now.Before(e.at) || e.room-e.granted-c.N < margin(c) {
		return false, held, others
	}
	if g == nil {
		if r.txns == nil {
			r.txns = make(map[string]*localGrant)
		}
		g = &localGrant{key: key}
		r.txns[c.Txn] = g
	} else if g.key != key {
		return false, held, others // the limits changed within the transaction
	}
	e.granted += c.N
	g.n += c.N
	g.at = now
	return true, 0, 0
}

// reserved records that c's transaction may hold a reservation in Redis
// (a release must ask Redis); moved: it reserved, for what it asked and
// all it held here, which Redis now holds instead (false when the answer
// was lost: what it held here stays counted).
func (r *rooms) reserved(c Charge, moved bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.txns[c.Txn]
	if g == nil {
		g = &localGrant{key: roomKey(c)}
		if r.txns == nil {
			r.txns = make(map[string]*localGrant)
		}
		r.txns[c.Txn] = g
	}
	if moved {
		r.dropLocked(g)
	}
	g.redis = true
	g.at = time.Now()
}

// done ends the transaction txn's entry in the ledger (charged or
// released): known reports whether there was one, and redis whether it
// may hold a reservation in Redis. charged: its local grants became a
// charge the last answer did not report, so they come off the room.
func (r *rooms) done(txn string, charged bool) (known, redis bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.txns[txn]
	if g == nil {
		return false, false
	}
	if e := r.m[g.key]; e != nil && charged {
		e.room -= g.n
	}
	r.dropLocked(g)
	delete(r.txns, txn)
	return true, g.redis
}

// dropLocked takes g's local grants off its entry.
func (r *rooms) dropLocked(g *localGrant) {
	if e := r.m[g.key]; e != nil {
		e.granted = max(e.granted-g.n, 0)
	}
	g.n = 0
}

// note keeps what an answer of the script to a reserve or a commit says of
// c's room: {0, now, room} when it fitted (shorter answers say nothing of
// it), {1, ...} when it did not. What this instance granted and has not
// yet charged stays counted against it.
func (r *rooms) note(c Charge, res []int64, now time.Time) {
	if limited(c) != 1 {
		return // never granted here
	}
	var room int
	var ms int64 // Redis's time of the answer
	switch {
	case len(res) >= 3 && res[0] == 0:
		room, ms = int(res[2]), res[1]
	case len(res) >= 5 && res[0] == 1:
		room, ms = 0, res[4]
	default:
		return
	}
	key := roomKey(c)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]*roomEntry)
	}
	if e := r.m[key]; e == nil {
		r.m[key] = &roomEntry{room: room, at: now, redisMs: ms}
	} else if ms >= e.redisMs {
		e.room, e.at, e.redisMs = room, now, ms
	}
	if len(r.m)+len(r.txns) >= r.sweep {
		r.sweepLocked(now)
	}
}

// grantLife is rooms.life when none is set.
const grantLife = 15 * time.Minute

// sweepLocked drops stale entries that no open transaction holds, and
// grants older than life.
func (r *rooms) sweepLocked(now time.Time) {
	life := r.life
	if life <= 0 {
		life = grantLife
	}
	for txn, g := range r.txns {
		if now.Sub(g.at) >= life {
			r.dropLocked(g)
			delete(r.txns, txn)
		}
	}
	for k, e := range r.m {
		if now.Sub(e.at) >= roomTTL && e.granted == 0 {
			delete(r.m, k)
		}
	}
	r.sweep = max(2*(len(r.m)+len(r.txns)), 4096)
}
