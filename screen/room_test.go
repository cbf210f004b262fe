package screen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"sluice/screen/redistest"

	"github.com/redis/go-redis/v9"
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
	ctx := context.Background()
	s := roomStore(t)
	const limit = 20
	sendOne(t, s, login("big@example.test", limit, "first", 1)) // 19 fit now, and s knows it
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
	wantUsed(t, s, "big@example.test", limit)
}

// Several open transactions on one instance: what one was granted from
// the known room counts against the others, in Redis's check too, so RCPT
// lets through exactly what fits and no charge is refused.
func TestKnownRoomOpenTransactions(t *testing.T) {
	ctx := context.Background()
	s := roomStore(t)
	const limit = 20
	c := func(txn string, n int) Charge { return login("open@example.test", limit, txn, n) }
	sendOne(t, s, c("first", 1))
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
	wantUsed(t, s, "open@example.test", limit)
}

// A commit run again after its answer was lost (go-redis retries a call
// that timed out) finds its charge and says so, even at the limit: the
// message is not refused for its own charge.
func TestRetriedCommitAtTheLimit(t *testing.T) {
	ctx := context.Background()
	s := roomStore(t)
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
	wantUsed(t, s, "edge@example.test", 3) // charged once
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
	if known, inRedis := r.done("t", false); !known || inRedis {
		t.Fatalf("done(t): known %v, in Redis %v; want known, only local", known, inRedis)
	}
}

// loseAnswer makes the next Redis call's answer lost after Redis ran it,
// as a read timeout does.
type loseAnswer struct{ next atomic.Bool }

func (h *loseAnswer) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *loseAnswer) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err == nil && h.next.Swap(false) {
			err = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("i/o timeout")}
			cmd.SetErr(err)
		}
		return err
	}
}
func (h *loseAnswer) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// lossyRedis is a redis-server of its own and a client whose next answer
// lose can drop.
func lossyRedis(t *testing.T) (*redistest.Server, redis.UniversalClient, *loseAnswer) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := testRedisClient(t, srv.URL())
	lose := &loseAnswer{}
	rdb.AddHook(lose)
	return srv, rdb, lose
}

// What may be held in Redis is released there: a reservation whose
// answer was lost (made for a transaction that held local grants, which
// it took over), and a transaction whose charge was refused. A transaction
// granted only locally costs no release.
func TestKnownRoomReleases(t *testing.T) {
	srv, rdb, lose := lossyRedis(t)
	ctx := context.Background()
	s := NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Hour})
	const limit = 100
	c := func(txn string, n int) Charge { return login("rel@example.test", limit, txn, n) }
	reserved := func() int {
		t.Helper()
		u, err := s.Usage(ctx, "example.test", "login:rel@example.test")
		if err != nil {
			t.Fatal(err)
		}
		return u.Reserved
	}
	sendOne(t, s, c("first", 1))

	t.Run("granted locally only: no release in Redis", func(t *testing.T) {
		if ref, err := s.Reserve(ctx, c("local", 1)); err != nil || ref != nil {
			t.Fatal(ref, err)
		}
		before := s.prechecks.knownRoom.Load()
		trips, _ := srv.RoundTrips(t, func() { s.Release(ctx, c("local", 0)) })
		if trips != 0 || before == 0 {
			t.Fatalf("release of a local grant: %d round trips (known-room grants %d), want 0", trips, before)
		}
	})
	t.Run("lost answer of a reserve", func(t *testing.T) {
		// 99 fit and a quarter (25) stays: 74 local grants, then the 75th
		// reserves 75 in Redis, and its answer is lost.
		local := s.prechecks.knownRoom.Load()
		for i := 0; i < 74; i++ {
			if ref, err := s.Reserve(ctx, c("big", 1)); err != nil || ref != nil {
				t.Fatal(ref, err)
			}
		}
		if n := s.prechecks.knownRoom.Load() - local; n != 74 || reserved() != 0 {
			t.Fatalf("%d granted locally, %d reserved in Redis; want 74 and 0", n, reserved())
		}
		lose.next.Store(true)
		if _, err := s.Reserve(ctx, c("big", 1)); err == nil {
			t.Fatal("no error for a lost answer")
		}
		if r := reserved(); r != 75 {
			t.Fatalf("%d reserved in Redis after the lost answer, want 75 (the transaction's)", r)
		}
		if err := s.Release(ctx, c("big", 0)); err != nil {
			t.Fatal(err)
		}
		if r := reserved(); r != 0 {
			t.Fatalf("after the release: %d still reserved in Redis", r)
		}
	})
	t.Run("refused charge", func(t *testing.T) {
		if ref, err := s.Reserve(ctx, c("over", 1)); err != nil || ref != nil {
			t.Fatal(ref, err)
		}
		if ref, _ := s.Commit(ctx, c("over", limit)); ref == nil { // more than fits
			t.Fatal("a charge past the limit went through")
		}
		if err := s.Release(ctx, c("over", 0)); err != nil {
			t.Fatal(err)
		}
		if r := reserved(); r != 0 {
			t.Fatalf("after the release: %d still reserved in Redis", r)
		}
	})
	s.rooms.mu.Lock()
	open := len(s.rooms.txns)
	s.rooms.mu.Unlock()
	if open != 0 {
		t.Fatalf("%d transactions left in the ledger, want none", open)
	}
}

// The ledger's arithmetic: what other transactions were granted counts
// against a transaction whose own grants are under another key (a reload
// changed the limit); an answer older (by Redis's clock) than the one
// known is ignored; a charge reported without the room comes off it.
func TestKnownRoomLedger(t *testing.T) {
	now := time.Now()
	ms := now.UnixMilli()
	t.Run("others under another key", func(t *testing.T) {
		var r rooms
		old := func(txn string) Charge { return login("k@example.test", 100, txn, 1) }
		nw := func(txn string) Charge { return login("k@example.test", 50, txn, 1) }
		r.note(old("x"), []int64{0, ms, 90}, now)
		for i := 0; i < 10; i++ {
			if ok, _, _ := r.take(old("a"), now); !ok {
				t.Fatal("a not granted")
			}
		}
		r.note(nw("x"), []int64{0, ms, 45}, now)
		for i := 0; i < 15; i++ {
			if ok, _, _ := r.take(nw("b"), now); !ok {
				t.Fatal("b not granted")
			}
		}
		if ok, held, others := r.take(nw("a"), now); ok || held != 10 || others != 15 {
			t.Fatalf("a under the new limit: granted %v, held %d, others %d; want asked, 10, 15", ok, held, others)
		}
	})
	t.Run("older answer ignored", func(t *testing.T) {
		var r rooms
		c := login("s@example.test", 100, "t", 1)
		r.note(c, []int64{0, ms + 5, 24}, now) // the newer answer, noted first
		r.note(c, []int64{0, ms, 90}, now)
		if ok, _, _ := r.take(c, now); ok {
			t.Fatal("granted from the older answer (90) though Redis said 24 later")
		}
	})
	t.Run("charge without the room", func(t *testing.T) {
		var r rooms
		c := login("w@example.test", 100, "t", 1)
		r.note(c, []int64{0, ms, 40}, now)
		for i := 0; i < 10; i++ {
			r.take(c, now)
		}
		r.done("t", true) // {0, now}: charged, the room not reported
		if ok, _, _ := r.take(login("w@example.test", 100, "u", 6), now); ok {
			t.Fatal("granted 6 of a room of 30 with a margin of 25")
		}
		if ok, _, _ := r.take(login("w@example.test", 100, "u", 5), now); !ok {
			t.Fatal("5 of a room of 30 with a margin of 25 not granted")
		}
	})
}

// A login whose domain has a total is never granted locally: other logins
// of the domain use its room unseen.
func TestKnownRoomNotWithDomainTotal(t *testing.T) {
	s := roomStore(t)
	c := func(txn string) Charge {
		return Charge{Tag: "example.test", Txn: txn, ID: txn, N: 1,
			Scopes: []Scope{{Key: "login:d@example.test", Limit: 100}, {Key: "domain:example.test", Limit: 1000}}}
	}
	for i := 0; i < 5; i++ {
		sendOne(t, s, c(fmt.Sprint("t", i)))
	}
	if local, asked := s.prechecks.knownRoom.Load(), s.prechecks.redis.Load(); local != 0 || asked != 5 {
		t.Fatalf("%d granted locally, %d asked Redis; want 0 and 5", local, asked)
	}
}

// A charge whose answer is lost is refused (451 4.3.0) and taken back: the
// client sends the message again, and it must not count twice.
func TestLostChargeIsRefunded(t *testing.T) {
	_, rdb, lose := lossyRedis(t)
	ctx := context.Background()
	q := NewQuota(NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Minute}), QuotaConfig{Default: 10}, quiet)
	const login = "lost@example.test"
	if err := q.Reserve(ctx, login, nil, "t1", 1); err != nil {
		t.Fatal(err)
	}
	lose.next.Store(true)
	err := q.Commit(ctx, login, nil, "t1", "m1", 1)
	var v *Verdict
	if !errors.As(err, &v) || v.Code != 451 || v.Enhanced != [3]int{4, 3, 0} {
		t.Fatalf("commit with its answer lost: %v, want 451 4.3.0", err)
	}
	u, err := q.Store().Usage(ctx, "example.test", "login:"+login)
	if err != nil || u.Used != 0 {
		t.Fatalf("usage %+v %v; want the refused message not charged", u, err)
	}
}

// roomStore is a RedisStore on a redis-server of its own.
func roomStore(t *testing.T) *RedisStore {
	t.Helper()
	srv := redistest.Start(t)
	return NewRedisStore(testRedisClient(t, srv.URL()), StoreConfig{Window: time.Hour, Hold: time.Minute})
}

// sendOne reserves c's recipients one by one and charges them, failing
// the test on any refusal: afterwards the store knows c's room.
func sendOne(t *testing.T, s *RedisStore, c Charge) {
	t.Helper()
	ctx := context.Background()
	one := c
	one.N = 1
	for i := 0; i < c.N; i++ {
		if ref, err := s.Reserve(ctx, one); err != nil || ref != nil {
			t.Fatalf("reserve %s: %+v %v", c.Txn, ref, err)
		}
	}
	if ref, err := s.Commit(ctx, c); err != nil || ref != nil {
		t.Fatalf("commit %s: %+v %v", c.Txn, ref, err)
	}
}

// wantUsed fails unless login has used recipients charged and none held
// in Redis.
func wantUsed(t *testing.T, s *RedisStore, login string, used int) {
	t.Helper()
	u, err := s.Usage(context.Background(), "example.test", "login:"+login)
	if err != nil || u.Used != used || u.Reserved != 0 {
		t.Fatalf("usage of %s %+v %v; want %d used, none held", login, u, err, used)
	}
}
