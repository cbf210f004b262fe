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
// the room it last heard of and cannot see the other's grants, so RCPT
// lets through more than fits, but the charges at the end of DATA are
// checked by Redis: exactly the limit is charged, the rest refused there
// (or at RCPT) with the quota's refusal.
func TestKnownRoomNeverOvershoots(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	cfg := StoreConfig{Window: time.Hour, Hold: time.Minute}
	a := NewRedisStore(testRedisClient(t, srv.URL()), cfg)
	b := NewRedisStore(testRedisClient(t, srv.URL()), cfg)
	const limit = 8
	c := func(txn string) Charge { return login("two@example.test", limit, txn, 1) }
	charged, refused, atRcpt := 0, 0, 0
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
	reserve := func(s *RedisStore, txn string) bool {
		t.Helper()
		ref, err := s.Reserve(ctx, c(txn))
		if err != nil || ref != nil && ref.Scope.Limit != limit {
			t.Fatalf("reserve %s: %+v %v", txn, ref, err)
		}
		return ref == nil
	}
	reserve(a, "a0")
	commit(a, "a0") // a knows: 7 fit
	reserve(b, "b0")
	commit(b, "b0") // b knows: 6 fit
	var txns []string
	for i := 1; i <= 6; i++ {
		for _, p := range []struct {
			s    *RedisStore
			name string
		}{{a, "a"}, {b, "b"}} {
			if txn := fmt.Sprint(p.name, i); reserve(p.s, txn) {
				txns = append(txns, txn)
			} else {
				atRcpt++
			}
		}
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
	if charged != limit || refused == 0 || charged+refused+atRcpt != 14 {
		t.Fatalf("%d charged, %d refused at the end of DATA, %d at RCPT; want %d charged, some refused at the end of DATA (the race), 14 in all",
			charged, refused, atRcpt, limit)
	}
}

// One transaction with more recipients than fit: RCPT refuses the first
// that does not fit, as without the known room (the grants made from it
// move into the Redis reservation once it runs low), and the charge of
// those accepted goes through.
func TestKnownRoomOneTransaction(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	s := NewRedisStore(testRedisClient(t, srv.URL()), StoreConfig{Window: time.Hour, Hold: time.Minute})
	const limit = 20
	first := login("big@example.test", limit, "first", 1)
	if ref, err := s.Reserve(ctx, first); err != nil || ref != nil {
		t.Fatal(ref, err)
	}
	if ref, err := s.Commit(ctx, first); err != nil || ref != nil { // 19 fit now, and s knows it
		t.Fatal(ref, err)
	}
	accepted := 0
	for i := 0; i < 40; i++ {
		ref, err := s.Reserve(ctx, login("big@example.test", limit, "big", 1))
		if err != nil {
			t.Fatal(err)
		}
		if ref != nil {
			break
		}
		accepted++
	}
	if accepted != limit-1 {
		t.Fatalf("RCPT accepted %d of 40 recipients, want %d (what fits)", accepted, limit-1)
	}
	if ref, err := s.Commit(ctx, login("big@example.test", limit, "big", accepted)); err != nil || ref != nil {
		t.Fatalf("the charge of the %d accepted: %+v %v", accepted, ref, err)
	}
	if u, err := s.Usage(ctx, "example.test", "login:big@example.test"); err != nil || u.Used != limit || u.Reserved != 0 {
		t.Fatalf("usage %+v %v; want %d used, none held", u, err, limit)
	}
}

// Several open transactions on one instance: what one was granted from
// the known room counts against the others, in Redis's check too, so RCPT
// lets through exactly what fits and no charge is refused.
func TestKnownRoomOpenTransactions(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	s := NewRedisStore(testRedisClient(t, srv.URL()), StoreConfig{Window: time.Hour, Hold: time.Minute})
	const limit = 20
	c := func(txn string, n int) Charge { return login("open@example.test", limit, txn, n) }
	if ref, err := s.Reserve(ctx, c("first", 1)); err != nil || ref != nil {
		t.Fatal(ref, err)
	}
	if ref, err := s.Commit(ctx, c("first", 1)); err != nil || ref != nil {
		t.Fatal(ref, err)
	}
	got := map[string]int{}
	rcpts := func(txn string, most int) {
		for got[txn] < most {
			ref, err := s.Reserve(ctx, c(txn, 1))
			if err != nil {
				t.Fatal(err)
			}
			if ref != nil {
				return
			}
			got[txn]++
		}
	}
	rcpts("a", 10)                        // all from the known room; a is then in its DATA
	rcpts("b", 40)                        // until refused
	for round := 0; round < 15; round++ { // c and d take turns
		rcpts("c", got["c"]+1)
		rcpts("d", got["d"]+1)
	}
	if n := got["a"] + got["b"] + got["c"] + got["d"]; n != limit-1 {
		t.Fatalf("RCPT accepted %v, %d in all; want %d (what fits)", got, n, limit-1)
	}
	for _, txn := range []string{"a", "b", "c", "d"} {
		if got[txn] == 0 {
			continue
		}
		if ref, err := s.Commit(ctx, c(txn, got[txn])); err != nil || ref != nil {
			t.Fatalf("charge of %s (%d): %+v %v; want charged", txn, got[txn], ref, err)
		}
	}
	if u, err := s.Usage(ctx, "example.test", "login:open@example.test"); err != nil || u.Used != limit || u.Reserved != 0 {
		t.Fatalf("usage %+v %v; want %d used, none held", u, err, limit)
	}
}

// A commit run again after its answer was lost (go-redis retries a call
// that timed out) finds its charge and says so, even at the limit: the
// message is not refused for its own charge.
func TestRetriedCommitAtTheLimit(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	s := NewRedisStore(testRedisClient(t, srv.URL()), StoreConfig{Window: time.Hour, Hold: time.Minute})
	c := login("edge@example.test", 3, "t", 3)
	for i := 0; i < 3; i++ {
		if ref, err := s.Reserve(ctx, login("edge@example.test", 3, "t", 1)); err != nil || ref != nil {
			t.Fatal(ref, err)
		}
	}
	for try := 1; try <= 2; try++ {
		if ref, err := s.Commit(ctx, c); err != nil || ref != nil {
			t.Fatalf("commit, try %d: %+v %v; want charged", try, ref, err)
		}
	}
	if u, err := s.Usage(ctx, "example.test", "login:edge@example.test"); err != nil || u.Used != 3 {
		t.Fatalf("usage %+v %v; want 3 (charged once)", u, err)
	}
	if ref, _ := s.Commit(ctx, login("edge@example.test", 3, "other", 1)); ref == nil {
		t.Fatal("another message past the limit was charged")
	}
}

// A known room is used for roomTTL, and only for the limits it was
// reported under (a reload that changes a limit asks Redis again).
func TestKnownRoomExpires(t *testing.T) {
	var r rooms
	c := login("x@example.test", 100, "t", 1)
	now := time.Now()
	r.note(c, []int64{0, now.UnixMilli(), 90}, now)
	if ok, _, _ := r.take(c, now.Add(roomTTL-time.Millisecond)); !ok {
		t.Fatal("a fresh answer with room was not used")
	}
	if ok, held, _ := r.take(c, now.Add(roomTTL)); ok || held != 1 {
		t.Fatalf("an answer roomTTL old: granted %v, held %d; want asked, with the 1 granted before", ok, held)
	}
	if ok, _, _ := r.take(login("x@example.test", 50, "u", 1), now); ok {
		t.Fatal("an answer under another limit was used")
	}
	if ok, _, others := r.take(login("x@example.test", 100, "v", 1), now.Add(roomTTL)); ok || others != 1 {
		t.Fatalf("another transaction: granted %v, others %d; want asked, with t's 1", ok, others)
	}
	r.note(c, []int64{1, 1, 100, now.UnixMilli(), now.UnixMilli()}, now)
	if ok, _, _ := r.take(c, now); ok {
		t.Fatal("room granted after a refusal")
	}
	r.note(c, []int64{0, now.UnixMilli()}, now) // a commit within its reservation: says nothing of the room
	if ok, _, _ := r.take(c, now); ok {
		t.Fatal("an answer without the room changed what is known")
	}
	if known, inRedis := r.done("t"); !known || inRedis {
		t.Fatalf("done(t): known %v, in Redis %v; want known, only local", known, inRedis)
	}
}
