package screen

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/screen/redistest"
)

// batchPipeline is the tail of serve's pipeline on one Redis: the loop
// rule (3 copies allowed), then the compromise counters (first-time
// recipients over 5 suspend, volume thresholds out of reach).
func batchPipeline(t *testing.T, rdb redis.UniversalClient, overrides map[string]ActionOverrides) (*Pipeline, suspendLog) {
	t.Helper()
	hourly := NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Minute})
	daily := NewRedisStore(rdb, StoreConfig{Window: 24 * time.Hour, Hold: time.Minute})
	loops := NewRedisStore(rdb, StoreConfig{Window: 10 * time.Minute, Hold: time.Minute})
	sus := suspendLog{}
	return &Pipeline{Log: quiet, Overrides: overrides, Rules: []Rule{
		Headers{},
		&Repeats{Repeats: 3, Store: loops, Log: quiet},
		&Compromise{NewRecipientsPerHour: 5, VolumeMultiple: 10, MinVolume: 1 << 30, History: hourly, Hourly: hourly, Daily: daily,
			Suspend: sus, Contact: "abuse@relay.test", Log: quiet},
	}}, sus
}

func sameCopy(login, rcpt string) *Message {
	return msg(login, []string{rcpt}, "From: "+login+"\nSubject: Contact form\n\nA visitor wrote: hello\n")
}

// The loop rule and the compromise counters count a message in one round
// trip; a copy the loop rule defers or holds is not counted as volume or
// first-time recipients, unless the loop rule is overridden to allow.
func TestLoopAndCompromiseShareARoundTrip(t *testing.T) {
	srv := redistest.Start(t)
	rdb := testRedisClient(t, srv.URL())
	ctx := context.Background()
	volume := func(login string) int {
		u, err := NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Minute}).Usage(ctx, domainOf(login), "vol:"+login)
		if err != nil {
			t.Fatal(err)
		}
		return u.Used
	}

	t.Run("one round trip, loop stops the counting", func(t *testing.T) {
		p, _ := batchPipeline(t, rdb, nil)
		const login = "form@example.test"
		// The first run loads the script (NOSCRIPT, then EVAL): not counted.
		p.Screen(ctx, sameCopy("warm-up@example.test", "owner@remote.test"))
		var got []string
		trips, calls := srv.RoundTrips(t, func() {
			for i := 0; i < 8; i++ {
				got = append(got, verdictName(p.Screen(ctx, sameCopy(login, "owner@remote.test"))))
			}
		})
		if want := "accept accept accept defer defer defer hold hold"; strings.Join(got, " ") != want {
			t.Fatalf("verdicts %v, want %s", got, want)
		}
		if trips != 8 || calls["evalsha"] != 8 {
			t.Fatalf("%d round trips, %d script runs for 8 messages, want 8 and 8", trips, calls["evalsha"])
		}
		if v := volume(login); v != 3 {
			t.Fatalf("volume %d, want 3: the copies the loop rule stopped are not counted", v)
		}
	})

	t.Run("loop allowed: every copy counted", func(t *testing.T) {
		const login = "allowed@example.test"
		p, _ := batchPipeline(t, rdb, map[string]ActionOverrides{login: {"loop": "allow"}})
		for i := 0; i < 8; i++ {
			if v := p.Screen(ctx, sameCopy(login, "owner@remote.test")); v != nil {
				t.Fatalf("copy %d: %+v with loop allowed", i, v)
			}
		}
		if v := volume(login); v != 8 {
			t.Fatalf("volume %d, want 8", v)
		}
	})

	t.Run("compromise judged from the batch", func(t *testing.T) {
		p, sus := batchPipeline(t, rdb, nil)
		const login = "stolen@example.test"
		var v *Verdict
		for i := 0; i < 10 && v == nil; i++ {
			out := p.Run(ctx, sameCopy(login, fmt.Sprintf("stranger%d@list.test", i)))
			v = out.Verdict
		}
		if v == nil || v.Rule != "compromise" || v.Action != Hold || !strings.Contains(v.Message, "first-time recipients") {
			t.Fatalf("a burst of strangers: %+v", v)
		}
		if sus[login] == "" {
			t.Fatalf("login not suspended: %v", sus)
		}
	})

	t.Run("compromise off: the loop rule alone, one round trip", func(t *testing.T) {
		p, _ := batchPipeline(t, rdb, nil)
		c := p.Rules[len(p.Rules)-1].(*Compromise)
		c.NewRecipientsPerHour, c.VolumeMultiple = 0, 0
		const login = "alone@example.test"
		var got []string
		trips, _ := srv.RoundTrips(t, func() {
			for i := 0; i < 5; i++ {
				got = append(got, verdictName(p.Screen(ctx, sameCopy(login, "owner@remote.test"))))
			}
		})
		if want := "accept accept accept defer defer"; strings.Join(got, " ") != want || trips != 5 {
			t.Fatalf("verdicts %v in %d round trips, want %s in 5", got, trips, want)
		}
	})

	t.Run("Redis down lets mail through", func(t *testing.T) {
		dead, err := NewRedisClient("redis://127.0.0.1:1/0", 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dead.Close() })
		p, _ := batchPipeline(t, dead, nil)
		if v := p.Screen(ctx, sameCopy("down@example.test", "owner@remote.test")); v != nil {
			t.Fatalf("with Redis down: %+v", v)
		}
	})
}

func verdictName(v *Verdict) string {
	if v == nil {
		return "accept"
	}
	return map[Action]string{Reject: "reject", Defer: "defer", Hold: "hold", Mark: "mark"}[v.Action]
}

// ScreenAndCommit charges the quota in the counting rules' round trip
// when it lets the message through, and leaves the commit to the caller
// when the batch stopped before it (the loop rule deferred or held the
// message) or Redis failed.
func TestScreenAndCommit(t *testing.T) {
	srv := redistest.Start(t)
	rdb := testRedisClient(t, srv.URL())
	ctx := context.Background()
	q := NewQuota(NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Minute}), QuotaConfig{Default: 100}, quiet)
	p, _ := batchPipeline(t, rdb, nil)
	p.Quota = q
	usage := func(login string) Usage {
		u, err := q.Store().Usage(ctx, domainOf(login), "login:"+login)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	send := func(login, rcpt string, n int) (hold string, committed bool, err error) {
		txn, id := fmt.Sprintf("t-%s-%d", login, n), fmt.Sprintf("m-%s-%d", login, n)
		if err := q.Reserve(ctx, login, nil, txn, 1); err != nil {
			t.Fatal(err)
		}
		m := sameCopy(login, rcpt)
		hold, _, committed, err = p.ScreenAndCommit(ctx, login, "", login, m.Rcpts, m.Raw, false, nil, txn, id)
		return hold, committed, err
	}
	send("warm-up@example.test", "owner@remote.test", 0) // the script is loaded

	const login = "shop@example.test"
	var hold string
	var committed bool
	var err error
	trips, _ := srv.RoundTrips(t, func() { hold, committed, err = send(login, "owner@remote.test", 1) })
	if err != nil || hold != "" || !committed {
		t.Fatalf("first message: hold %q, committed %v, err %v", hold, committed, err)
	}
	if trips != 2 { // the RCPT's reservation, then counts and commit together
		t.Fatalf("%d round trips for the reservation and the screen, want 2", trips)
	}
	if u := usage(login); u.Used != 1 || u.Reserved != 0 {
		t.Fatalf("after one message: %+v, want 1 used, none reserved", u)
	}
	for n := 2; n <= 3; n++ {
		trips, _ := srv.RoundTrips(t, func() { _, committed, err = send(login, "owner@remote.test", n) })
		if err != nil || !committed {
			t.Fatalf("copy %d: committed %v, err %v", n, committed, err)
		}
		if trips != 1 { // the room the last answer reported: no reservation
			t.Fatalf("copy %d: %d round trips, want 1 (RCPT granted from the room known)", n, trips)
		}
	}
	// The charges in the batch closed the transactions' local grants.
	st := q.Store().(*RedisStore)
	st.rooms.mu.Lock()
	open := len(st.rooms.txns)
	st.rooms.mu.Unlock()
	if open != 0 {
		t.Fatalf("%d transactions still in the ledger after their charges, want 0", open)
	}
	// The 4th copy is deferred by the loop rule: not charged (and granted
	// at RCPT from the room known, so nothing is held in Redis either).
	if _, committed, err = send(login, "owner@remote.test", 4); err == nil || committed {
		t.Fatalf("4th copy: committed %v, err %v; want a deferral, not charged", committed, err)
	}
	if u := usage(login); u.Used != 3 || u.Reserved != 0 {
		t.Fatalf("after the deferral: %+v, want 3 used, none held", u)
	}
	// Past twice the limit the loop rule holds: accepted, so the caller
	// commits it itself.
	for n := 5; n <= 7; n++ {
		hold, committed, err = send(login, "owner@remote.test", n)
	}
	if err != nil || hold == "" || committed {
		t.Fatalf("7th copy: hold %q, committed %v, err %v; want held, left to the caller", hold, committed, err)
	}

	// A commit the quota would refuse (nothing reserved and the limit
	// reached) is left to the caller's Commit, which says why.
	tight := NewQuota(q.Store(), QuotaConfig{Default: 1}, quiet)
	p.Quota = tight
	const full = "full@example.test"
	if _, committed, err = send(full, "a@remote.test", 1); err != nil || !committed {
		t.Fatalf("within the limit: committed %v, err %v", committed, err)
	}
	m := sameCopy(full, "b@remote.test")
	if _, _, committed, err = p.ScreenAndCommit(ctx, full, "", full, m.Rcpts, m.Raw, false, nil, "unreserved", "m-x"); err != nil || committed {
		t.Fatalf("over the limit without a reservation: committed %v, err %v; want it left to the caller", committed, err)
	}
	if cerr := tight.Commit(ctx, full, nil, "unreserved", "m-x", 1); cerr == nil {
		t.Fatal("the caller's Commit let the message through over the limit")
	}
	if u := usage(full); u.Used != 1 {
		t.Fatalf("full login: %+v, want 1 used", u)
	}
}
