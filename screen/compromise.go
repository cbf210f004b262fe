package screen

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Suspender marks a login suspended with a reason (the user file, or a
// platform's backend). A suspended login cannot log in until an operator
// runs `sluice user enable`.
type Suspender interface {
	Suspend(ctx context.Context, login, reason string) error
}

// RecipientHistory remembers whom a login has written to, to spot a burst
// of first-time recipients (a stolen password sending to a bought list).
type RecipientHistory interface {
	// NewRecipients records rcpts and returns how many were new.
	NewRecipients(ctx context.Context, tag, login string, rcpts []string) (int, error)
}

// Compromise watches each login's sending for the signs of a stolen
// password or an infected site: a burst of distinct first-time recipients
// within an hour, or an hour's volume many times the login's usual hourly
// volume over the last day. On either it suspends the login (with the
// reason) and holds the message.
type Compromise struct {
	NewRecipientsPerHour int     // 0: off
	VolumeMultiple       float64 // 0: off
	MinVolume            int     // hourly volume below which volume is never suspicious
	History              RecipientHistory
	Hourly               QuotaStore // one-hour window counters
	Daily                QuotaStore // 24-hour window counters
	Suspend              Suspender
	Contact              string // whom a suspended user should contact
	Log                  *slog.Logger

	mu sync.Mutex // keeps the hourly and daily volume counts of stores other than Redis in step
}

func (c *Compromise) Name() string { return "compromise" }

func (c *Compromise) Check(ctx context.Context, m *Message) *Verdict {
	tag := domainOf(m.Login)
	var why string
	hist, hok := c.History.(*RedisStore)
	hourly, h1 := c.Hourly.(*RedisStore)
	daily, h2 := c.Daily.(*RedisStore)
	wantNew, wantVolume := c.NewRecipientsPerHour > 0 && c.History != nil, c.VolumeMultiple > 0
	if hok && h1 && h2 && (wantNew || wantVolume) {
		// Shared store: the same counts in one round trip (see
		// compromiseCounts), instead of up to four.
		newTotal, hour, day, err := compromiseCounts(ctx, hist, hourly, daily, tag, m.Login, nowID(), m.Rcpts, wantNew, wantVolume)
		if err != nil {
			c.Log.Warn("screen: compromise counters unavailable", "login", m.Login, "err", err)
			return nil
		}
		why = c.judge(newTotal, hour, day)
		return c.suspend(ctx, m, why)
	}
	newTotal, hour, day := -1, 0, 0
	if wantNew {
		n, err := c.History.NewRecipients(ctx, tag, m.Login, m.Rcpts)
		if err != nil {
			c.Log.Warn("screen: recipient history unavailable", "login", m.Login, "err", err)
		} else if n > 0 {
			if total, err := c.Hourly.Count(ctx, tag, "new:"+m.Login, nowID(), n); err == nil {
				newTotal = total
			}
		}
	}
	if wantVolume {
		// Both counts together: a message counted in the day but not yet
		// in the hour would look like earlier volume of a new login.
		id := nowID()
		c.mu.Lock()
		h, err1 := c.Hourly.Count(ctx, tag, "vol:"+m.Login, id, len(m.Rcpts))
		d, err2 := c.Daily.Count(ctx, tag, dailyVolumeKey(m.Login), id, len(m.Rcpts))
		c.mu.Unlock()
		if err1 == nil && err2 == nil {
			hour, day = h, d
		}
	}
	why = c.judge(newTotal, hour, day)
	return c.suspend(ctx, m, why)
}

// judge says what is suspicious about the counts (newTotal -1: no
// first-time recipients), or "".
func (c *Compromise) judge(newTotal, hour, day int) string {
	if c.NewRecipientsPerHour > 0 && newTotal > c.NewRecipientsPerHour {
		return fmt.Sprintf("%d first-time recipients within an hour (threshold %d)", newTotal, c.NewRecipientsPerHour)
	}
	if c.VolumeMultiple > 0 {
		// A login with no earlier volume has no "usual" yet: only the
		// quota applies to it.
		usual := float64(day-hour) / 23
		if day > hour && hour > c.MinVolume && float64(hour) > c.VolumeMultiple*max(usual, 1) {
			return fmt.Sprintf("%d recipients this hour against a usual %.0f per hour", hour, usual)
		}
	}
	return ""
}

// suspend acts on a reason ("" : nothing suspicious).
func (c *Compromise) suspend(ctx context.Context, m *Message, why string) *Verdict {
	if why == "" {
		return nil
	}
	reason := "suspended for suspected abuse: " + why
	if c.Suspend != nil {
		if err := c.Suspend.Suspend(ctx, m.Login, reason); err != nil {
			c.Log.Error("screen: could not suspend login", "login", m.Login, "err", err)
		}
	}
	c.Log.Warn("screen: login suspended", "login", m.Login, "reason", reason)
	return &Verdict{Action: Hold, Code: 250, Enhanced: [3]int{2, 0, 0}, Rule: "compromise",
		Message: fmt.Sprintf("login %s is %s; contact %s", m.Login, reason, c.Contact)}
}

// NewRecipients implements RecipientHistory in memory.
func (m *MemoryStore) NewRecipients(_ context.Context, tag, login string, rcpts []string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen == nil {
		m.seen = map[string]map[string]time.Time{}
	}
	k := tag + "\x00" + login
	set := m.seen[k]
	if set == nil {
		set = map[string]time.Time{}
		m.seen[k] = set
	}
	now := m.now()
	n := 0
	for _, r := range rcpts {
		r = strings.ToLower(r)
		if t, ok := set[r]; !ok || now.Sub(t) > historyTTL {
			n++
		}
		if len(set) < 100000 {
			set[r] = now
		}
	}
	return n, nil
}

// historyTTL is how long a recipient counts as known.
const historyTTL = 30 * 24 * time.Hour

var seenScript = redis.NewScript(`
local n = 0
for i = 1, #ARGV - 1 do n = n + redis.call('SADD', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[#ARGV]))
return n
`)

// NewRecipients implements RecipientHistory in Redis: one set per login,
// hash-tagged like the quota keys, expiring after 30 days without mail.
func (r *RedisStore) NewRecipients(ctx context.Context, tag, login string, rcpts []string) (int, error) {
	args := make([]any, 0, len(rcpts)+1)
	for _, rc := range rcpts {
		args = append(args, strings.ToLower(rc))
	}
	args = append(args, historyTTL.Milliseconds())
	n, err := seenScript.Run(ctx, r.rdb, []string{"sluice:seen:{" + tag + "}:" + login}, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("%w: recipient history: %v", ErrStore, err)
	}
	return n, nil
}

// dailyVolumeKey names the login's 24-hour volume counter. It must differ
// from the hourly one ("vol:LOGIN"): in Redis both stores share one key
// space, and the hourly store's cleaning would cut the daily log to an
// hour, so that a login's "usual" volume always looked like nothing.
func dailyVolumeKey(login string) string { return "vol24:" + login }
