package screen

import (
	"context"
	"fmt"
	"testing"
	"time"

	"sluice/screen/redistest"
)

// RCPT's pre-check is answered from the room the last answer of Redis
// reported while it is fresh and well above the limit: no round trip.
// Near the limit every RCPT reserves in Redis, and a charge with no limit
// never asks.
func TestReserveFromKnownRoom(t *testing.T) {
	srv := redistest.Start(t)
	rdb := testRedisClient(t, srv.URL())
	ctx := context.Background()
	s := NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Minute})
	if _, err := s.Usage(ctx, "example.test", "login:warm-up@example.test"); err != nil { // the script is loaded
		t.Fatal(err)
	}
	reserveTrips := func(c Charge) int64 {
		t.Helper()
		var ref *Refusal
		var err error
		trips, _ := srv.RoundTrips(t, func() { ref, err = s.Reserve(ctx, c) })
		if err != nil || ref != nil {
			t.Fatalf("reserve %s: %+v %v", c.Txn, ref, err)
		}
		return trips
	}
	if n := reserveTrips(login("free@example.test", 0, "f1", 1)); n != 0 {
		t.Errorf("a login without a limit: %d round trips at RCPT, want 0", n)
	}

	const limit = 20 // margin: the last 5
	var trips []int64
	for i := 1; i <= limit; i++ {
		c := login("room@example.test", limit, fmt.Sprint("t", i), 1)
		trips = append(trips, reserveTrips(c))
		if ref, err := s.Commit(ctx, c); err != nil || ref != nil {
			t.Fatalf("commit %d: %+v %v", i, ref, err)
		}
	}
	// 1: nothing known yet. 2-15: 19..6 fit, each grant leaves 5 or more.
	// 16-20: within the last quarter, reserved in Redis.
	want := []int64{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1}
	if fmt.Sprint(trips) != fmt.Sprint(want) {
		t.Errorf("round trips at RCPT per message:\n got %v\nwant %v", trips, want)
	}
	ref, err := s.Reserve(ctx, login("room@example.test", limit, "t21", 1))
	if err != nil || ref == nil || ref.Used != limit {
		t.Fatalf("the 21st: %+v %v; want refused at RCPT", ref, err)
	}
	if u, err := s.Usage(ctx, "example.test", "login:room@example.test"); err != nil || u.Used != limit || u.Reserved != 0 {
		t.Fatalf("usage %+v %v; want %d used, none held", u, err, limit)
	}
}

// Two instances sending for one login near its limit: each grants from
// the room it last heard of, so RCPT lets through more than fits, but the
// charges at the end of DATA are checked by Redis: exactly the limit is
// charged, the rest refused there with the quota's refusal.
func TestKnownRoomNeverOvershoots(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	cfg := StoreConfig{Window: time.Hour, Hold: time.Minute}
	a := NewRedisStore(testRedisClient(t, srv.URL()), cfg)
	b := NewRedisStore(testRedisClient(t, srv.URL()), cfg)
	const limit = 8
	c := func(txn string) Charge { return login("two@example.test", limit, txn, 1) }
	charged, refused := 0, 0
	commit := func(s *RedisStore, txn string) {
		t.Helper()
		ref, err := s.Commit(ctx, c(txn))
		switch {
		case err != nil:
			t.Fatal(err)
		case ref == nil:
			charged++
		case ref.Scope.Limit != limit:
			t.Fatalf("commit %s refused with %+v", txn, ref)
		default:
			refused++
			s.Release(ctx, c(txn))
		}
	}
	reserve := func(s *RedisStore, txn string) {
		t.Helper()
		if ref, err := s.Reserve(ctx, c(txn)); err != nil || ref != nil {
			t.Fatalf("reserve %s: %+v %v", txn, ref, err)
		}
	}
	reserve(a, "a0")
	commit(a, "a0") // a knows: 7 fit
	reserve(b, "b0")
	commit(b, "b0") // b knows: 6 fit
	var txns []string
	for i := 1; i <= 6; i++ {
		reserve(a, fmt.Sprint("a", i))
		reserve(b, fmt.Sprint("b", i))
		txns = append(txns, fmt.Sprint("a", i), fmt.Sprint("b", i))
	}
	for _, txn := range txns {
		s := a
		if txn[0] == 'b' {
			s = b
		}
		commit(s, txn)
	}
	u, err := a.Usage(ctx, "example.test", "login:two@example.test")
	if err != nil || u.Used != limit || u.Reserved != 0 {
		t.Fatalf("usage %+v %v; want exactly the limit %d charged, none held", u, err, limit)
	}
	if charged != limit || refused != 14-limit {
		t.Fatalf("%d charged, %d refused at the end of DATA; want %d and %d", charged, refused, limit, 14-limit)
	}
}

// A known room is used for roomTTL, and only for the limits it was
// reported under (a reload that changes a limit asks Redis again).
func TestKnownRoomExpires(t *testing.T) {
	var r rooms
	c := login("x@example.test", 100, "t", 1)
	now := time.Now()
	r.note(c, []int64{0, now.UnixMilli(), 90}, now)
	if !r.take(c, now.Add(roomTTL-time.Millisecond)) {
		t.Fatal("a fresh answer with room was not used")
	}
	if r.take(c, now.Add(roomTTL)) {
		t.Fatal("an answer roomTTL old was used")
	}
	if r.take(login("x@example.test", 50, "t", 1), now) {
		t.Fatal("an answer under another limit was used")
	}
	r.note(c, []int64{1, 1, 100, now.UnixMilli(), now.UnixMilli()}, now)
	if r.take(c, now) {
		t.Fatal("room granted after a refusal")
	}
	r.note(c, []int64{0, now.UnixMilli()}, now) // a commit within its reservation: says nothing of the room
	if r.take(c, now) {
		t.Fatal("an answer without the room changed what is known")
	}
}
