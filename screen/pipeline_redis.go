package screen

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// scriptCall is one script to run in a pipeline.
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
}

// runPipelined runs calls in one round trip, as one transaction
// (MULTI/EXEC: no other client's command runs between them; all keys carry
// one hash tag, so this holds in a Cluster too). A Redis that lost its
// script cache (after a restart) answers NOSCRIPT to each call whose
// script it does not hold, and runs the others all the same: only those
// calls go once more, with the script bodies, so that nothing counts
// twice.
func runPipelined(ctx context.Context, rdb redis.UniversalClient, calls []scriptCall) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(calls))
	send := func(idx []int, full bool) error {
		_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range idx {
				c := calls[i]
				if full {
					cmds[i] = c.script.Eval(ctx, p, c.keys, c.args...)
				} else {
					cmds[i] = c.script.EvalSha(ctx, p, c.keys, c.args...)
				}
			}
			return nil
		})
		return err
	}
	all := make([]int, len(calls))
	for i := range all {
		all[i] = i
	}
	err := send(all, false)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		var again []int
		for i, c := range cmds {
			if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
				again = append(again, i)
			}
		}
		err = send(again, true)
	}
	if err != nil {
		return nil, err
	}
	return cmds, nil
}

// countCall is Count as a pipelined call.
func (r *RedisStore) countCall(tag, key, id string, n int) scriptCall {
	return scriptCall{quotaScript, quotaKeys(tag, key),
		[]any{"count", r.cfg.Window.Milliseconds(), r.cfg.Hold.Milliseconds(), "", n, id, 0}}
}

// countNewCall records rcpts in the login's recipient history (as
// NewRecipients does) and counts those that were new under "new:LOGIN",
// in one script: its answer's total is -1 when none was new.
func (r *RedisStore) countNewCall(tag, login, id string, rcpts []string) scriptCall {
	args := make([]any, 0, 7+len(rcpts))
	args = append(args, "countnew", r.cfg.Window.Milliseconds(), r.cfg.Hold.Milliseconds(), "", 0, id, historyTTL.Milliseconds())
	for _, rc := range rcpts {
		args = append(args, strings.ToLower(rc))
	}
	return scriptCall{quotaScript, append(quotaKeys(tag, "new:"+login), seenKey(tag, login)), args}
}

// compromiseCounts does the compromise rule's counting against Redis in
// one round trip: the first-time recipients within the hour (-1 when this
// message has none; counted in hourly, the history kept beside it), and
// the login's volume this hour and today, this message included.
func compromiseCounts(ctx context.Context, hourly, daily *RedisStore, tag, login, id string, rcpts []string, wantNew, wantVolume bool) (newTotal, hour, day int, err error) {
	var calls []scriptCall
	if wantNew {
		calls = append(calls, hourly.countNewCall(tag, login, id, rcpts))
	}
	if wantVolume {
		calls = append(calls, hourly.countCall(tag, "vol:"+login, id, len(rcpts)), daily.countCall(tag, dailyVolumeKey(login), id, len(rcpts)))
	}
	cmds, err := runPipelined(ctx, hourly.rdb, calls)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("%w: compromise counts: %v", ErrStore, err)
	}
	newTotal = -1
	if wantNew {
		if newTotal, err = countResult(cmds[0]); err != nil {
			return 0, 0, 0, err
		}
	}
	if wantVolume {
		if hour, err = countResult(cmds[len(cmds)-2]); err == nil {
			day, err = countResult(cmds[len(cmds)-1])
		}
		if err != nil {
			return 0, 0, 0, err
		}
	}
	return newTotal, hour, day, nil
}

func countResult(c *redis.Cmd) (int, error) {
	res, err := c.Int64Slice()
	if err != nil {
		return 0, fmt.Errorf("%w: count: %v", ErrStore, err)
	}
	if len(res) < 3 {
		return 0, fmt.Errorf("%w: count: short answer", ErrStore)
	}
	return int(res[2]), nil
}
