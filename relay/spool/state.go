package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Recipient states.
const (
	RcptPending   = "pending"   // not tried yet, or deferred (4xx) and due again
	RcptDelivered = "delivered" // 2xx
	RcptFailed    = "failed"    // 5xx, expired or suppressed: bounced to the sender
)

// RcptState is what delivery knows of one recipient.
type RcptState struct {
	Addr      string    `json:"addr"`
	Status    string    `json:"status"`
	Attempts  int       `json:"attempts"`
	LastReply string    `json:"last_reply,omitempty"` // remote reply or our reason
	LastHost  string    `json:"last_host,omitempty"`
	Updated   time.Time `json:"updated"`
}

// State is the delivery state of a queued message, kept beside it in
// queue/ID.state and rewritten after each attempt. Losing the newest state
// (a crash between a delivery and its state write) can cause a duplicate
// delivery, never a loss.
type State struct {
	Attempts int         `json:"attempts"`
	NextTry  time.Time   `json:"next_try"`
	Held     bool        `json:"held,omitempty"`
	HeldWhy  string      `json:"held_why,omitempty"`
	Warned   bool        `json:"warned,omitempty"` // delay DSN sent
	Rcpts    []RcptState `json:"rcpts"`
}

// Pending returns the recipients still to be delivered.
func (st *State) Pending() []string {
	var out []string
	for _, r := range st.Rcpts {
		if r.Status == RcptPending {
			out = append(out, r.Addr)
		}
	}
	return out
}

// Rcpt returns the state of addr (nil if unknown).
func (st *State) Rcpt(addr string) *RcptState {
	for i := range st.Rcpts {
		if st.Rcpts[i].Addr == addr {
			return &st.Rcpts[i]
		}
	}
	return nil
}

// NewState is the state of a message nobody tried yet.
func NewState(env *Envelope) *State {
	st := &State{NextTry: env.Received, Held: env.Hold != "", HeldWhy: env.Hold}
	for _, r := range env.To {
		st.Rcpts = append(st.Rcpts, RcptState{Addr: r, Status: RcptPending, Updated: env.Received})
	}
	return st
}

func (s *Spool) statePath(id string) string { return filepath.Join(s.queueDir, id+".state") }

// LoadState returns the saved state of id, or a fresh one from its envelope.
func (s *Spool) LoadState(id string, env *Envelope) (*State, error) {
	if j := s.journal.Load(); j != nil && j.entry(id) != nil {
		// Journaled: in its first attempt, with no state file (SaveState
		// makes a message a file before it writes one).
		return NewState(env), nil
	}
	data, err := os.ReadFile(s.statePath(id))
	if errors.Is(err, os.ErrNotExist) {
		return NewState(env), nil
	}
	if err != nil {
		return nil, fmt.Errorf("spool: state %s: %w", id, err)
	}
	st := new(State)
	if err := json.Unmarshal(data, st); err != nil {
		// A torn state file: start over from the envelope (at worst a
		// duplicate delivery).
		return NewState(env), nil
	}
	return st, nil
}

// SaveState writes the state of id atomically. It returns ErrNotFound, and
// leaves no state file behind, when the message is no longer queued (it
// was removed while being delivered).
func (s *Spool) SaveState(id string, st *State) error {
	if !validID(id) {
		return ErrNotFound
	}
	if j := s.journal.Load(); j != nil {
		// Still pending after an attempt: from now on a file like any other.
		if _, err := j.toFile(id); err != nil {
			return err
		}
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.tmpDir, id+".state")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return classify("state", err)
	}
	if err := os.Rename(tmp, s.statePath(id)); err != nil {
		os.Remove(tmp)
		return classify("state", err)
	}
	if _, err := os.Stat(filepath.Join(s.queueDir, id)); errors.Is(err, os.ErrNotExist) {
		os.Remove(s.statePath(id))
		return ErrNotFound
	}
	return nil
}
