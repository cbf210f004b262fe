package spool

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
)

// DefaultFreshLimit bounds the bytes of just-queued messages kept in
// memory for their first delivery attempt (Spool.FreshLimit).
const DefaultFreshLimit = 64 << 20

// freshCache keeps each message Enqueue made durable, as it was written,
// until its first Read: the first delivery attempt, moments later, then
// does not open and read back from disk what was in memory, and parse its
// envelope again. The file stays the truth: Read still checks that it
// exists (`sluice queue delete` in another process), and a message not in
// the cache (too many bytes waiting, a retry, a restart) is read from disk.
type freshCache struct {
	mu    sync.Mutex
	msgs  map[string]freshMsg
	bytes int
}

type freshMsg struct {
	env Envelope
	msg []byte
}

// put keeps env and the message made of parts when limit allows.
func (c *freshCache) put(env *Envelope, parts [][]byte, limit int) {
	if limit <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bytes+env.Size > limit {
		return
	}
	msg := make([]byte, 0, env.Size)
	for _, p := range parts {
		msg = append(msg, p...)
	}
	e := *env
	e.To = append([]string(nil), env.To...)
	e.Received = e.Received.Round(0) // as read back from disk: no monotonic clock
	if c.msgs == nil {
		c.msgs = map[string]freshMsg{}
	}
	c.msgs[env.ID] = freshMsg{env: e, msg: msg}
	c.bytes += len(msg)
}

// take removes and returns the message id, if kept.
func (c *freshCache) take(id string) (*Envelope, []byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.msgs[id]
	if !ok {
		return nil, nil, false
	}
	delete(c.msgs, id)
	c.bytes -= len(m.msg)
	return &m.env, m.msg, true
}

// readFresh is Read for a message still in the cache; ok is false when it
// is not there.
func (s *Spool) readFresh(id string) (env *Envelope, msg []byte, ok bool, err error) {
	env, msg, ok = s.fresh.take(id)
	if !ok {
		return nil, nil, false, nil
	}
	if _, err := os.Lstat(filepath.Join(s.queueDir, id)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, true, ErrNotFound
		}
		return nil, nil, false, nil // let the disk path report it
	}
	return env, msg, true, nil
}
