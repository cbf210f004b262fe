package userdb

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"sync"
	"time"
)

// verifiedCache remembers, per login, a keyed digest of the last password
// that matched the login's stored hash, so that a client that logs in for
// every message (PHPMailer, most WordPress plugins) does not pay for a slow
// hash each time. An entry counts only while it is younger than the TTL and
// the stored hash is unchanged: a new password or a removed login is seen
// at once. Only successes are remembered; an unknown login or a wrong
// password always costs the full hash. The digest is HMAC-SHA256 under a
// key that lives only in this process's memory.
type verifiedCache struct {
	key [32]byte

	mu      sync.Mutex
	entries map[string]verifiedEntry
}

type verifiedEntry struct {
	hash  string // the stored hash the password was checked against
	mac   [32]byte
	until time.Time
}

// maxVerified bounds the cache; past it, expired entries go, and if that
// is not enough the cache starts again empty.
const maxVerified = 100000

func newVerifiedCache() *verifiedCache {
	c := &verifiedCache{entries: map[string]verifiedEntry{}}
	rand.Read(c.key[:])
	return c
}

func (c *verifiedCache) mac(login, password string) [32]byte {
	h := hmac.New(sha256.New, c.key[:])
	h.Write([]byte(login))
	h.Write([]byte{0})
	h.Write([]byte(password))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// ok reports whether password was verified against hash for login within
// the TTL.
func (c *verifiedCache) ok(login, hash, password string, now time.Time) bool {
	c.mu.Lock()
	e, found := c.entries[login]
	c.mu.Unlock()
	if !found || e.hash != hash || !now.Before(e.until) {
		return false
	}
	m := c.mac(login, password)
	return subtle.ConstantTimeCompare(m[:], e.mac[:]) == 1
}

func (c *verifiedCache) remember(login, hash, password string, until time.Time) {
	m := c.mac(login, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxVerified {
		now := time.Now()
		for k, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxVerified {
			c.entries = map[string]verifiedEntry{}
		}
	}
	c.entries[login] = verifiedEntry{hash: hash, mac: m, until: until}
}
