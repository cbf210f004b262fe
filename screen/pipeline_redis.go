package screen

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// scriptCall is one call of quotaScript, to run in a batch.
type scriptCall struct {
	keys []string
	args []any
	// stop, when above 0, ends the batch after this call if its count is
	// above it: the calls after it are not run (see runBatch).
	stop int
}

// runBatch runs calls in one invocation of quotaScript (its "batch" op):
// one round trip, one atomic step (all keys carry one hash tag, so this
// holds in a Cluster too), and one script run instead of one each. A Redis
// that lost its script cache (after a restart) answers NOSCRIPT before
// running anything, and the script is sent again with its body: nothing
// counts twice. A call whose stop it passed ends the batch: the answers
// are then fewer than the calls.
func runBatch(ctx context.Context, rdb redis.UniversalClient, calls []scriptCall) ([][]int64, error) {
	var keys []string
	args := make([]any, 0, 2+3*len(calls)+8*len(calls))
	args = append(args, "batch", len(calls))
	for _, c := range calls {
		args = append(args, len(c.keys), len(c.args), c.stop)
	}
	for _, c := range calls {
		keys = append(keys, c.keys...)
		args = append(args, c.args...)
	}
	res, err := quotaScript.Run(ctx, rdb, keys, args...).Slice()
	if err != nil {
		return nil, err
	}
	if len(res) == 0 || len(res) > len(calls) {
		return nil, fmt.Errorf("batch: %d answers to %d calls", len(res), len(calls))
	}
	out := make([][]int64, len(res))
	for i, r := range res {
		vals, ok := r.([]any)
		if !ok {
			return nil, fmt.Errorf("batch: answer %d is %T", i, r)
		}
		out[i] = make([]int64, len(vals))
		for j, v := range vals {
			n, ok := v.(int64)
			if !ok {
				return nil, fmt.Errorf("batch: answer %d holds %T", i, v)
			}
			out[i][j] = n
		}
	}
	return out, nil
}

// countCall is Count as a call of a batch.
func (r *RedisStore) countCall(tag, key, id string, n int) scriptCall {
	return r.call("count", Charge{Tag: tag, Scopes: []Scope{{Key: key}}, ID: id, N: n})
}

// seenCall adds rcpts to the login's recipient history. Its op "seen"
// answers how many were new (NewRecipients); "countnew" also counts those
// under "new:LOGIN", and its answer's total is -1 when none was new.
func (r *RedisStore) seenCall(op, tag, login, id string, rcpts []string) scriptCall {
	args := make([]any, 0, 7+len(rcpts))
	args = append(args, op, r.cfg.Window.Milliseconds(), r.cfg.Hold.Milliseconds(), "", 0, id, historyTTL.Milliseconds())
	for _, rc := range rcpts {
		args = append(args, strings.ToLower(rc))
	}
	keys := []string{seenKey(tag, login)}
	if op == "countnew" {
		keys = append(quotaKeys(tag, "new:"+login), keys...)
	}
	return scriptCall{keys: keys, args: args}
}

// compromiseCalls are the compromise rule's counts as calls of a batch:
// the first-time recipients within the hour (counted in hourly, the
// history kept beside it), and the login's volume this hour and today,
// this message included.
func compromiseCalls(hourly, daily *RedisStore, tag, login, id string, rcpts []string, wantNew, wantVolume bool) []scriptCall {
	var calls []scriptCall
	if wantNew {
		calls = append(calls, hourly.seenCall("countnew", tag, login, id, rcpts))
	}
	if wantVolume {
		calls = append(calls, hourly.countCall(tag, "vol:"+login, id, len(rcpts)), daily.countCall(tag, dailyVolumeKey(login), id, len(rcpts)))
	}
	return calls
}

// compromiseAnswers reads the answers to compromiseCalls: newTotal is -1
// when the message has no first-time recipient.
func compromiseAnswers(res [][]int64, wantNew, wantVolume bool) (newTotal, hour, day int, err error) {
	want := 0
	if wantNew {
		want++
	}
	if wantVolume {
		want += 2
	}
	if len(res) != want {
		return 0, 0, 0, fmt.Errorf("%w: compromise counts: %d answers, want %d", ErrStore, len(res), want)
	}
	newTotal = -1
	if wantNew {
		if newTotal, err = countResult(res[0]); err != nil {
			return 0, 0, 0, err
		}
	}
	if wantVolume {
		if hour, err = countResult(res[len(res)-2]); err == nil {
			day, err = countResult(res[len(res)-1])
		}
		if err != nil {
			return 0, 0, 0, err
		}
	}
	return newTotal, hour, day, nil
}

// compromiseCounts does the compromise rule's counting against Redis in
// one round trip (see compromiseCalls).
func compromiseCounts(ctx context.Context, hourly, daily *RedisStore, tag, login, id string, rcpts []string, wantNew, wantVolume bool) (newTotal, hour, day int, err error) {
	res, err := runBatch(ctx, hourly.rdb, compromiseCalls(hourly, daily, tag, login, id, rcpts, wantNew, wantVolume))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("%w: compromise counts: %v", ErrStore, err)
	}
	return compromiseAnswers(res, wantNew, wantVolume)
}

func countResult(res []int64) (int, error) {
	if len(res) < 3 {
		return 0, fmt.Errorf("%w: count: short answer", ErrStore)
	}
	return int(res[2]), nil
}
