package screen

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/screen/redistest"
)

type suspendLog map[string]string

func (s suspendLog) Suspend(_ context.Context, login, reason string) error {
	s[login] = reason
	return nil
}

// compromiseStores returns the hourly and daily stores (the hourly one is
// also the recipient history) of one kind: "memory", or "redis" on a real
// redis-server (where the rule counts in one pipelined round trip).
func compromiseStores(t *testing.T, kind string) (hourly, daily interface {
	QuotaStore
	RecipientHistory
}) {
	if kind == "memory" {
		return NewMemoryStore(StoreConfig{Window: time.Hour, Hold: time.Minute}), NewMemoryStore(StoreConfig{Window: 24 * time.Hour, Hold: time.Minute})
	}
	srv := redistest.Start(t)
	rdb, err := NewRedisClient(srv.URL(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Minute}), NewRedisStore(rdb, StoreConfig{Window: 24 * time.Hour, Hold: time.Minute})
}

func TestCompromiseFirstTimeRecipientBurst(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) { testCompromiseBurst(t, kind) })
	}
}

func testCompromiseBurst(t *testing.T, kind string) {
	store, daily := compromiseStores(t, kind)
	sus := suspendLog{}
	c := &Compromise{NewRecipientsPerHour: 50, VolumeMultiple: 10, MinVolume: 1000, History: store, Hourly: store,
		Daily: daily, Suspend: sus, Contact: "abuse@relay.test", Log: quiet}
	// Writing to the same 10 people again and again is normal.
	for i := 0; i < 20; i++ {
		var rcpts []string
		for j := 0; j < 10; j++ {
			rcpts = append(rcpts, fmt.Sprintf("friend%d@remote.test", j))
		}
		if v := cmpCheck(context.Background(), c, &Message{Login: "info@example.test", Rcpts: rcpts}); v != nil {
			t.Fatalf("known recipients flagged: %v", v)
		}
	}
	// Then a burst of strangers.
	var v *Verdict
	for i := 0; i < 6 && v == nil; i++ {
		var rcpts []string
		for j := 0; j < 10; j++ {
			rcpts = append(rcpts, fmt.Sprintf("stranger%d-%d@list.test", i, j))
		}
		v = cmpCheck(context.Background(), c, &Message{Login: "info@example.test", Rcpts: rcpts})
	}
	if v == nil || v.Action != Hold || !strings.Contains(v.Message, "first-time recipients") || !strings.Contains(v.Message, "abuse@relay.test") {
		t.Fatalf("burst: %+v", v)
	}
	if !strings.HasPrefix(sus["info@example.test"], "suspended for suspected abuse") {
		t.Fatalf("login not suspended: %v", sus)
	}
}

func TestCompromiseVolumeMultiple(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) { testCompromiseVolume(t, kind) })
	}
}

func testCompromiseVolume(t *testing.T, kind string) {
	hourly, daily := compromiseStores(t, kind)
	sus := suspendLog{}
	c := &Compromise{VolumeMultiple: 5, MinVolume: 20, Hourly: hourly, Daily: daily, Suspend: sus, Contact: "abuse@relay.test", Log: quiet}
	// A new login has no usual volume: never flagged by volume alone.
	for i := 0; i < 30; i++ {
		if v := cmpCheck(context.Background(), c, &Message{Login: "new@example.test", Rcpts: []string{"a@remote.test"}}); v != nil {
			t.Fatalf("new login flagged: %v", v)
		}
	}
	// An established login: 46 recipients over the day before this hour
	// (2 an hour), then 30 in this hour.
	daily.Count(context.Background(), "example.test", dailyVolumeKey("old@example.test"), "history", 46)
	var v *Verdict
	for i := 0; i < 30 && v == nil; i++ {
		v = cmpCheck(context.Background(), c, &Message{Login: "old@example.test", Rcpts: []string{"a@remote.test"}})
	}
	if v == nil || !strings.Contains(v.Message, "usual") || sus["old@example.test"] == "" {
		t.Fatalf("volume spike not caught: %+v %v", v, sus)
	}
}

// TestCompromiseConcurrentNewLogin: many sessions of a new login at once
// never make it look as if it had earlier volume (the hourly and daily
// counts move together), so the volume signal does not suspend it.
func TestCompromiseConcurrentNewLogin(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			hourly, daily := compromiseStores(t, kind)
			sus := suspendLog{}
			var mu sync.Mutex
			c := &Compromise{VolumeMultiple: 10, MinVolume: 5, Hourly: hourly, Daily: daily,
				Suspend: suspenderFunc(func(login, reason string) { mu.Lock(); sus[login] = reason; mu.Unlock() }), Contact: "abuse@relay.test", Log: quiet}
			var wg sync.WaitGroup
			for w := 0; w < 50; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 4; i++ {
						cmpCheck(context.Background(), c, &Message{Login: "burst@example.test", Rcpts: []string{"a@remote.test"}})
					}
				}()
			}
			wg.Wait()
			if len(sus) != 0 {
				t.Fatalf("a new login was suspended by the volume signal: %v", sus)
			}
		})
	}
}

type suspenderFunc func(login, reason string)

func (f suspenderFunc) Suspend(_ context.Context, login, reason string) error {
	f(login, reason)
	return nil
}

// cmpRoundTrips counts a client's round trips to Redis: one per command sent
// alone, one per pipeline or transaction; not the commands that set up a
// new pooled connection (HELLO, CLIENT).
type cmpRoundTrips struct{ n atomic.Int64 }

func cmpConnSetup(cmd redis.Cmder) bool { return cmd.Name() == "hello" || cmd.Name() == "client" }

func (h *cmpRoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *cmpRoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !cmpConnSetup(cmd) {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *cmpRoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !cmpConnSetup(cmds[0]) {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// cmpRedisRule is the rule over a real redis-server as serve wires it
// (the daily store is the history), with its client's round trips counted.
func cmpRedisRule(t *testing.T) (*Compromise, redis.UniversalClient, *cmpRoundTrips) {
	srv := redistest.Start(t)
	rdb, err := NewRedisClient(srv.URL(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	trips := &cmpRoundTrips{}
	rdb.AddHook(trips)
	hourly := NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Minute})
	daily := NewRedisStore(rdb, StoreConfig{Window: 24 * time.Hour, Hold: time.Minute})
	return &Compromise{NewRecipientsPerHour: 100, VolumeMultiple: 10, MinVolume: 1000, History: daily, Hourly: hourly, Daily: daily,
		Suspend: suspendLog{}, Contact: "abuse@relay.test", Log: quiet}, rdb, trips
}

// cmpUsed is what a counter of the rule holds this window.
func cmpUsed(t *testing.T, s QuotaStore, key string) int {
	t.Helper()
	u, err := s.Usage(context.Background(), "example.test", key)
	if err != nil {
		t.Fatal(err)
	}
	return u.Used
}

// TestCompromiseRedisOneRoundTrip: against Redis the rule costs one round
// trip a message, also when the message has first-time recipients (their
// count goes in the same transaction as the volume).
func TestCompromiseRedisOneRoundTrip(t *testing.T) {
	c, _, trips := cmpRedisRule(t)
	ctx := context.Background()
	const login = "shop@example.test"
	// A connection made and the script loaded, as after the first message.
	if _, err := c.Hourly.Count(ctx, "example.test", "warm", nowID(), 1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		rcpts []string
	}{
		{"first-time recipients", []string{"a@remote.test", "b@remote.test"}},
		{"known recipient", []string{"a@remote.test"}},
		{"one of each", []string{"A@remote.test", "c@remote.test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := trips.n.Load()
			if v := cmpCheck(ctx, c, &Message{Login: login, Rcpts: tc.rcpts}); v != nil {
				t.Fatal(v)
			}
			if n := trips.n.Load() - before; n != 1 {
				t.Errorf("%d round trips, want 1", n)
			}
		})
	}
	if n := cmpUsed(t, c.Hourly, "new:"+login); n != 3 {
		t.Errorf("first-time recipients this hour: %d, want 3", n)
	}
	if n := cmpUsed(t, c.Hourly, "vol:"+login); n != 5 {
		t.Errorf("volume this hour: %d recipients, want 5", n)
	}
}

// TestCompromiseRedisScriptCacheLost: after Redis lost its scripts
// (restart, SCRIPT FLUSH), each message still counts once: the batch is
// refused whole (NOSCRIPT) and sent again with the script's body.
func TestCompromiseRedisScriptCacheLost(t *testing.T) {
	c, rdb, _ := cmpRedisRule(t)
	ctx := context.Background()
	const login = "shop@example.test"
	hourly := c.Hourly.(*RedisStore)
	for i := 0; i < 2; i++ {
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		calls := []scriptCall{
			hourly.countCall("example.test", "vol:"+login, nowID(), 1),
			hourly.seenCall("countnew", "example.test", login, nowID(), []string{fmt.Sprintf("x%d@remote.test", i)}),
		}
		if _, err := runBatch(ctx, rdb, calls); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if v := cmpCheck(ctx, c, &Message{Login: login, Rcpts: []string{"e@remote.test", "f@remote.test"}}); v != nil {
		t.Fatal(v)
	}
	if n := cmpUsed(t, c.Hourly, "vol:"+login); n != 1+1+2 {
		t.Errorf("volume this hour: %d recipients, want 4 (each call once)", n)
	}
	if n := cmpUsed(t, c.Daily, dailyVolumeKey(login)); n != 2 {
		t.Errorf("volume today: %d recipients, want 2", n)
	}
	if n := cmpUsed(t, c.Hourly, "new:"+login); n != 4 {
		t.Errorf("first-time recipients this hour: %d, want 4 (each call once)", n)
	}
}

// TestRecipientHistory: a recipient counts as new once, in any case of
// its address, in memory and in Redis (the history the rule uses when its
// stores are not one Redis).
func TestRecipientHistory(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			h, _ := compromiseStores(t, kind)
			ctx := context.Background()
			for _, c := range []struct {
				rcpts []string
				want  int
			}{
				{[]string{"a@remote.test", "b@remote.test"}, 2},
				{[]string{"A@Remote.TEST", "b@remote.test", "c@remote.test"}, 1},
				{[]string{"c@remote.test"}, 0},
			} {
				if n, err := h.NewRecipients(ctx, "example.test", "shop@example.test", c.rcpts); n != c.want || err != nil {
					t.Errorf("NewRecipients(%v) = %d, %v; want %d new", c.rcpts, n, err, c.want)
				}
			}
			if n, _ := h.NewRecipients(ctx, "example.test", "other@example.test", []string{"a@remote.test"}); n != 1 {
				t.Errorf("another login's first recipient: %d new, want 1", n)
			}
		})
	}
}

// cmpCheck runs c as the pipeline does: the effect of its verdict (the
// suspension) applied.
func cmpCheck(ctx context.Context, c *Compromise, m *Message) *Verdict {
	v := c.Check(ctx, m)
	if v != nil && v.effect != nil {
		v.effect(ctx)
	}
	return v
}

// An "allow" override for compromise lets the message through and leaves
// the login alone: the suspension is part of the verdict the override
// replaces, not done before it is looked at.
func TestCompromiseAllowOverrideDoesNotSuspend(t *testing.T) {
	sus := suspendLog{}
	for _, override := range []string{"allow", ""} {
		t.Run("override="+override, func(t *testing.T) {
			clear(sus)
			c := &Compromise{NewRecipientsPerHour: 5, Hourly: NewMemoryStore(StoreConfig{Window: time.Hour}),
				Daily: NewMemoryStore(StoreConfig{Window: 24 * time.Hour}), History: NewMemoryStore(StoreConfig{Window: time.Hour}),
				Suspend: sus, Contact: "abuse@relay.test", Log: quiet}
			p := &Pipeline{Rules: []Rule{c}, Log: quiet, Overrides: map[string]ActionOverrides{}}
			if override != "" {
				p.Overrides["shop@example.test"] = ActionOverrides{"compromise": override}
			}
			var rcpts []string
			for i := 0; i < 10; i++ {
				rcpts = append(rcpts, fmt.Sprintf("stranger%d@list.test", i))
			}
			out := p.Run(context.Background(), &Message{Login: "shop@example.test", Rcpts: rcpts})
			_, suspended := sus["shop@example.test"]
			if override == "allow" && (out.Verdict != nil || suspended) {
				t.Fatalf("allow override: verdict %v, suspended %v; want neither", out.Verdict, suspended)
			}
			if override == "" && (out.Verdict == nil || !suspended) {
				t.Fatalf("no override: verdict %v, suspended %v; want a hold and a suspension", out.Verdict, suspended)
			}
		})
	}
}
