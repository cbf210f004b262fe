package screen

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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
		if v := c.Check(context.Background(), &Message{Login: "info@example.test", Rcpts: rcpts}); v != nil {
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
		v = c.Check(context.Background(), &Message{Login: "info@example.test", Rcpts: rcpts})
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
		if v := c.Check(context.Background(), &Message{Login: "new@example.test", Rcpts: []string{"a@remote.test"}}); v != nil {
			t.Fatalf("new login flagged: %v", v)
		}
	}
	// An established login: 46 recipients over the day before this hour
	// (2 an hour), then 30 in this hour.
	daily.Count(context.Background(), "example.test", dailyVolumeKey("old@example.test"), "history", 46)
	var v *Verdict
	for i := 0; i < 30 && v == nil; i++ {
		v = c.Check(context.Background(), &Message{Login: "old@example.test", Rcpts: []string{"a@remote.test"}})
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
						c.Check(context.Background(), &Message{Login: "burst@example.test", Rcpts: []string{"a@remote.test"}})
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
