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
// reason) and holds the message. When every store is the same Redis, a
// message's counts take one round trip (see compromiseCounts).
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
	wantNew, wantVolume := c.wants()
	if !wantNew && !wantVolume {
		return nil
	}
	tag, id := domainOf(m.Login), nowID()
	var newTotal, hour, day int
	var err error
	if hourly, daily, ok := c.oneRedis(wantNew); ok {
		newTotal, hour, day, err = compromiseCounts(ctx, hourly, daily, tag, m.Login, id, m.Rcpts, wantNew, wantVolume)
	} else {
		newTotal, hour, day, err = c.countEach(ctx, tag, m.Login, id, m.Rcpts, wantNew, wantVolume)
	}
	return c.verdict(m, newTotal, hour, day, err)
}

// wants says which signals are on.
func (c *Compromise) wants() (newRecipients, volume bool) {
	return c.NewRecipientsPerHour > 0 && c.History != nil, c.VolumeMultiple > 0
}

// verdict is the rule's verdict on the counts (err: they failed, which
// lets the message through).
func (c *Compromise) verdict(m *Message, newTotal, hour, day int, err error) *Verdict {
	if err != nil {
		c.Log.Warn("screen: compromise counters unavailable", "login", m.Login, "err", err)
		return nil
	}
	why := c.judge(newTotal, hour, day)
	if why == "" {
		return nil
	}
	return c.suspend(m, why)
}

// batch implements batcher: the counts, when every store is one Redis.
func (c *Compromise) batch(m *Message, _ bool) (redis.UniversalClient, []scriptCall, bool) {
	wantNew, wantVolume := c.wants()
	hourly, daily, ok := c.oneRedis(wantNew)
	if !ok || !wantNew && !wantVolume {
		return nil, nil, false
	}
	return hourly.rdb, compromiseCalls(hourly, daily, domainOf(m.Login), m.Login, nowID(), m.Rcpts, wantNew, wantVolume), true
}

// judgeBatch implements batcher.
func (c *Compromise) judgeBatch(_ context.Context, m *Message, res [][]int64, err error) *Verdict {
	wantNew, wantVolume := c.wants()
	var newTotal, hour, day int
	if err == nil {
		newTotal, hour, day, err = compromiseAnswers(res, wantNew, wantVolume)
	}
	return c.verdict(m, newTotal, hour, day, err)
}

// oneRedis returns the rule's counters when all the stores it uses are
// RedisStores of one client, so that the counts can go in one
// transaction.
func (c *Compromise) oneRedis(wantNew bool) (hourly, daily *RedisStore, ok bool) {
	hourly, ok1 := c.Hourly.(*RedisStore)
	daily, ok2 := c.Daily.(*RedisStore)
	if !ok1 || !ok2 || daily.rdb != hourly.rdb {
		return nil, nil, false
	}
	if wantNew {
		if hist, ok := c.History.(*RedisStore); !ok || hist.rdb != hourly.rdb {
			return nil, nil, false
		}
	}
	return hourly, daily, true
}

// countEach is compromiseCounts for any stores, one call at a time.
func (c *Compromise) countEach(ctx context.Context, tag, login, id string, rcpts []string, wantNew, wantVolume bool) (newTotal, hour, day int, err error) {
	newTotal = -1
	if wantNew {
		n, err := c.History.NewRecipients(ctx, tag, login, rcpts)
		if err != nil {
			return 0, 0, 0, err
		}
		if n > 0 {
			if newTotal, err = c.Hourly.Count(ctx, tag, "new:"+login, id, n); err != nil {
				return 0, 0, 0, err
			}
		}
	}
	if wantVolume {
		// Both counts together: a message counted in the day but not yet
		// in the hour would look like earlier volume of a new login.
		c.mu.Lock()
		defer c.mu.Unlock()
		if hour, err = c.Hourly.Count(ctx, tag, "vol:"+login, id, len(rcpts)); err != nil {
			return 0, 0, 0, err
		}
		if day, err = c.Daily.Count(ctx, tag, dailyVolumeKey(login), id, len(rcpts)); err != nil {
			return 0, 0, 0, err
		}
	}
	return newTotal, hour, day, nil
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

// suspend holds the message; the verdict suspends the login for why once
// the pipeline lets it stand (an "allow" override for compromise does not).
func (c *Compromise) suspend(m *Message, why string) *Verdict {
	reason := SuspensionPrefix + why
	login := m.Login
	return &Verdict{Action: Hold, Code: 250, Enhanced: [3]int{2, 0, 0}, Rule: "compromise",
		Message: fmt.Sprintf("login %s is %s; contact %s", login, reason, c.Contact),
		effect: func(ctx context.Context) {
			if c.Suspend != nil {
				if err := c.Suspend.Suspend(ctx, login, reason); err != nil {
					c.Log.Error("screen: could not suspend login", "login", login, "err", err)
				}
			}
			c.Log.Warn("screen: login suspended", "login", login, "reason", reason)
		}}
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

// seenKey is the Redis set of the recipients login has written to.
func seenKey(tag, login string) string { return "sluice:seen:{" + tag + "}:" + login }

// NewRecipients implements RecipientHistory in Redis: one set per login,
// hash-tagged like the quota keys, expiring after 30 days without mail.
func (r *RedisStore) NewRecipients(ctx context.Context, tag, login string, rcpts []string) (int, error) {
	sc := r.seenCall("seen", tag, login, "", rcpts)
	res, err := quotaScript.Run(ctx, r.rdb, sc.keys, sc.args...).Int64Slice()
	if err != nil {
		return 0, fmt.Errorf("%w: recipient history: %v", ErrStore, err)
	}
	return countResult(res)
}

// dailyVolumeKey names the login's 24-hour volume counter. It must differ
// from the hourly one ("vol:LOGIN"): in Redis both stores share one key
// space, and the hourly store's cleaning would cut the daily log to an
// hour, so that a login's "usual" volume always looked like nothing.
func dailyVolumeKey(login string) string { return "vol24:" + login }
