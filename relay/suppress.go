package relay

import (
	"encoding/json"
	"errors"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"sluice/relay/spool"
)

// Suppressions remembers recipients that hard-bounced as unknown (5.1.1),
// per sender domain, so later mail to them fails fast with a clear DSN
// instead of hitting the remote server again (which hurts reputation). It
// is a JSON file in the data dir, rewritten atomically on change.
type Suppressions struct {
	path string
	ttl  time.Duration

	mu      sync.Mutex
	entries map[string]*Suppression
}

// Suppression is one remembered hard bounce.
type Suppression struct {
	SenderDomain string    `json:"sender_domain"`
	Rcpt         string    `json:"rcpt"`
	Reply        string    `json:"reply"`
	Since        time.Time `json:"since"`
	Until        time.Time `json:"until"`
}

// OpenSuppressions loads path; ttl 0 disables suppression.
func OpenSuppressions(path string, ttl time.Duration) (*Suppressions, error) {
	s := &Suppressions{path: path, ttl: ttl, entries: map[string]*Suppression{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	var list []*Suppression
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, err
	}
	for _, e := range list {
		s.entries[key(e.SenderDomain, e.Rcpt)] = e
	}
	return s, nil
}

func key(domain, rcpt string) string { return strings.ToLower(domain) + " " + strings.ToLower(rcpt) }

// Add remembers rcpt as unknown for mail from senderDomain.
func (s *Suppressions) Add(senderDomain, rcpt, reply string) {
	if s.ttl <= 0 {
		return
	}
	now := time.Now().UTC()
	s.mu.Lock()
	s.entries[key(senderDomain, rcpt)] = &Suppression{SenderDomain: strings.ToLower(senderDomain), Rcpt: strings.ToLower(rcpt), Reply: reply, Since: now, Until: now.Add(s.ttl)}
	s.mu.Unlock()
	s.save()
}

// Lookup reports whether rcpt is suppressed for senderDomain.
func (s *Suppressions) Lookup(senderDomain, rcpt string) (Suppression, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key(senderDomain, rcpt)]
	if !ok || time.Now().After(e.Until) {
		return Suppression{}, false
	}
	return *e, true
}

// List returns the live entries.
func (s *Suppressions) List() []Suppression {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Suppression
	for _, e := range s.entries {
		if time.Now().Before(e.Until) {
			out = append(out, *e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Rcpt < out[j].Rcpt })
	return out
}

// Delete forgets rcpt (for every sender domain when senderDomain is "").
func (s *Suppressions) Delete(senderDomain, rcpt string) int {
	s.mu.Lock()
	n := 0
	for k, e := range s.entries {
		if e.Rcpt == strings.ToLower(rcpt) && (senderDomain == "" || e.SenderDomain == strings.ToLower(senderDomain)) {
			delete(s.entries, k)
			n++
		}
	}
	s.mu.Unlock()
	if n > 0 {
		s.save()
	}
	return n
}

func (s *Suppressions) save() {
	s.mu.Lock()
	list := make([]*Suppression, 0, len(s.entries))
	for _, e := range s.entries {
		if time.Now().Before(e.Until) {
			list = append(list, e)
		}
	}
	data, _ := json.MarshalIndent(list, "", "  ")
	s.mu.Unlock()
	// Best effort: the list in memory is what counts; a failed write is
	// tried again at the next change.
	spool.ReplaceFile(s.path, data, 0o600)
}
