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
// script cache (after a restart) answers NOSCRIPT; the calls then go once
// more with the script bodies.
func runPipelined(ctx context.Context, rdb redis.UniversalClient, calls []scriptCall) ([]*redis.Cmd, error) {
	send := func(full bool) ([]*redis.Cmd, error) {
		cmds := make([]*redis.Cmd, len(calls))
		_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for i, c := range calls {
				if full {
					cmds[i] = c.script.Eval(ctx, p, c.keys, c.args...)
				} else {
					cmds[i] = c.script.EvalSha(ctx, p, c.keys, c.args...)
				}
			}
			return nil
		})
		return cmds, err
	}
	cmds, err := send(false)
	if err != nil && strings.Contains(err.Error(), "NOSCRIPT") {
		cmds, err = send(true)
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

// seenCall is NewRecipients as a pipelined call.
func (r *RedisStore) seenCall(tag, login string, rcpts []string) scriptCall {
	args := make([]any, 0, len(rcpts)+1)
	for _, rc := range rcpts {
		args = append(args, strings.ToLower(rc))
	}
	args = append(args, historyTTL.Milliseconds())
	return scriptCall{seenScript, []string{"sluice:seen:{" + tag + "}:" + login}, args}
}

// compromiseCounts does the compromise rule's counting against Redis in
// one round trip (two when the message has first-time recipients, whose
// number the second one adds to the hourly count): the first-time
// recipients, and the login's volume this hour and today including this
// message. newTotal is -1 when there were no first-time recipients.
func compromiseCounts(ctx context.Context, hist, hourly, daily *RedisStore, tag, login, id string, rcpts []string, wantNew, wantVolume bool) (newTotal, hour, day int, err error) {
	var calls []scriptCall
	if wantNew {
		calls = append(calls, hist.seenCall(tag, login, rcpts))
	}
	if wantVolume {
		calls = append(calls, hourly.countCall(tag, "vol:"+login, id, len(rcpts)), daily.countCall(tag, dailyVolumeKey(login), id, len(rcpts)))
	}
	cmds, err := runPipelined(ctx, hourly.rdb, calls)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("%w: compromise counts: %v", ErrStore, err)
	}
	newTotal = -1
	if wantVolume {
		if hour, err = countResult(cmds[len(cmds)-2]); err == nil {
			day, err = countResult(cmds[len(cmds)-1])
		}
		if err != nil {
			return 0, 0, 0, err
		}
	}
	if wantNew {
		n, err := cmds[0].Int()
		if err != nil {
			return 0, 0, 0, fmt.Errorf("%w: recipient history: %v", ErrStore, err)
		}
		if n > 0 {
			if newTotal, err = hourly.Count(ctx, tag, "new:"+login, id, n); err != nil {
				return 0, 0, 0, err
			}
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
