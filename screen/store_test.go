package screen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/screen/redistest"
)

// One behavioural suite, two implementations: the in-memory store must
// behave as the Redis store does.
func TestQuotaStores(t *testing.T) {
	impls := map[string]func(t *testing.T, cfg StoreConfig) QuotaStore{
		"memory": func(t *testing.T, cfg StoreConfig) QuotaStore { return NewMemoryStore(cfg) },
		"redis": func(t *testing.T, cfg StoreConfig) QuotaStore {
			srv := redistest.Start(t)
			rdb, err := NewRedisClient(srv.URL(), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rdb.Close() })
			return NewRedisStore(rdb, cfg)
		},
	}
	for name, mk := range impls {
		t.Run(name, func(t *testing.T) {
			t.Run("limit then slide", func(t *testing.T) {
				testLimitThenSlide(t, mk(t, StoreConfig{Window: 1500 * time.Millisecond, Hold: time.Minute}))
			})
			t.Run("recipients counted", func(t *testing.T) { testRecipientsCounted(t, mk(t, StoreConfig{Window: time.Hour, Hold: time.Minute})) })
			t.Run("release and refund cost nothing", func(t *testing.T) { testReleaseRefund(t, mk(t, StoreConfig{Window: time.Hour, Hold: time.Minute})) })
			t.Run("reservations expire", func(t *testing.T) {
				testReservationExpiry(t, mk(t, StoreConfig{Window: time.Hour, Hold: 300 * time.Millisecond}))
			})
			t.Run("domain total", func(t *testing.T) { testDomainTotal(t, mk(t, StoreConfig{Window: time.Hour, Hold: time.Minute})) })
			t.Run("concurrent never overshoots", func(t *testing.T) { testConcurrent(t, mk(t, StoreConfig{Window: time.Hour, Hold: time.Minute})) })
			t.Run("unlimited", func(t *testing.T) { testUnlimited(t, mk(t, StoreConfig{Window: time.Hour, Hold: time.Minute})) })
		})
	}
}

func login(name string, limit int, txn string, n int) Charge {
	return Charge{Tag: "example.test", Scopes: []Scope{{Key: "login:" + name, Limit: limit}}, Txn: txn, N: n, ID: txn}
}

// send reserves n one by one (as RCPT does) and commits; a refused commit
// releases what it held, as submit's next transaction or logout does.
func send(t *testing.T, s QuotaStore, c Charge) *Refusal {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < c.N; i++ {
		one := c
		one.N = 1
		ref, err := s.Reserve(ctx, one)
		if err != nil {
			t.Fatal(err)
		}
		if ref != nil {
			s.Release(ctx, c)
			return ref
		}
	}
	ref, err := s.Commit(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if ref != nil {
		s.Release(ctx, c)
	}
	return ref
}

func testLimitThenSlide(t *testing.T, s QuotaStore) {
	for i := 0; i < 3; i++ {
		if ref := send(t, s, login("a@example.test", 3, fmt.Sprint("m", i), 1)); ref != nil {
			t.Fatalf("message %d refused: %+v", i, ref)
		}
	}
	ref := send(t, s, login("a@example.test", 3, "m3", 1))
	if ref == nil {
		t.Fatal("4th message within the window accepted")
	}
	if ref.Scope.Limit != 3 || ref.Used != 3 || time.Until(ref.NextFit) > 1600*time.Millisecond || time.Until(ref.NextFit) < 0 {
		t.Fatalf("refusal %+v (next fit in %v)", ref, time.Until(ref.NextFit))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if send(t, s, login("a@example.test", 3, fmt.Sprint("late", time.Now().UnixNano()), 1)) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never accepted again after the window slid")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testRecipientsCounted(t *testing.T, s QuotaStore) {
	if ref := send(t, s, login("b@example.test", 10, "m1", 7)); ref != nil {
		t.Fatal(ref)
	}
	if ref := send(t, s, login("b@example.test", 10, "m2", 4)); ref == nil || ref.Scope.Limit != 10 {
		t.Fatalf("7+4 > 10 accepted: %+v", ref)
	}
	if u, _ := s.Usage(context.Background(), "example.test", "login:b@example.test"); u.Used != 7 || u.Reserved != 0 {
		t.Fatalf("refused message left a charge or reservation: %+v", u)
	}
	if ref := send(t, s, login("b@example.test", 10, "m3", 3)); ref != nil {
		t.Fatalf("7+3 refused: %+v", ref)
	}
	u, err := s.Usage(context.Background(), "example.test", "login:b@example.test")
	if err != nil || u.Used != 10 || u.Reserved != 0 || u.Resets.IsZero() {
		t.Fatalf("usage %+v %v", u, err)
	}
	if err := s.Reset(context.Background(), "example.test", "login:b@example.test"); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.Usage(context.Background(), "example.test", "login:b@example.test"); u.Used != 0 {
		t.Fatalf("after reset %+v", u)
	}
}

func testReleaseRefund(t *testing.T, s QuotaStore) {
	ctx := context.Background()
	c := login("c@example.test", 2, "t1", 2)
	if ref, err := s.Reserve(ctx, c); ref != nil || err != nil {
		t.Fatal(ref, err)
	}
	if ref, _ := s.Reserve(ctx, login("c@example.test", 2, "t2", 1)); ref == nil {
		t.Fatal("reservation not counted")
	}
	s.Release(ctx, c)
	if ref := send(t, s, login("c@example.test", 2, "t3", 2)); ref != nil {
		t.Fatalf("released capacity not given back: %+v", ref)
	}
	r, ok := s.(refunder)
	if !ok {
		t.Fatal("store cannot refund")
	}
	if err := r.Refund(ctx, login("c@example.test", 2, "t3", 2)); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.Usage(ctx, "example.test", "login:c@example.test"); u.Used != 0 {
		t.Fatalf("refund left %+v", u)
	}
}

func testReservationExpiry(t *testing.T, s QuotaStore) {
	ctx := context.Background()
	if ref, err := s.Reserve(ctx, login("d@example.test", 1, "lost", 1)); ref != nil || err != nil {
		t.Fatal(ref, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ref, err := s.Reserve(ctx, login("d@example.test", 1, "next", 1))
		if err != nil {
			t.Fatal(err)
		}
		if ref == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("an abandoned reservation never expired")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testDomainTotal(t *testing.T, s QuotaStore) {
	mk := func(who, txn string) Charge {
		return Charge{Tag: "shop.test", Txn: txn, ID: txn, N: 1, Scopes: []Scope{{Key: "login:" + who, Limit: 10}, {Key: "domain:shop.test", Limit: 3}}}
	}
	for i, who := range []string{"a@shop.test", "b@shop.test", "c@shop.test"} {
		if ref := send(t, s, mk(who, fmt.Sprint("d", i))); ref != nil {
			t.Fatal(ref)
		}
	}
	ref := send(t, s, mk("d@shop.test", "d4"))
	if ref == nil || ref.Scope.Key != "domain:shop.test" {
		t.Fatalf("domain total not enforced: %+v", ref)
	}
	// The refused charge left nothing on the login's own counter.
	if u, _ := s.Usage(context.Background(), "shop.test", "login:d@shop.test"); u.Used != 0 || u.Reserved != 0 {
		t.Fatalf("refused charge counted: %+v", u)
	}
}

func testConcurrent(t *testing.T, s QuotaStore) {
	const limit, workers = 20, 50
	var ok atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			ctx := context.Background()
			c := login("e@example.test", limit, fmt.Sprint("w", w), 1)
			ref, err := s.Reserve(ctx, c)
			if err != nil || ref != nil {
				return
			}
			if ref, err := s.Commit(ctx, c); err == nil && ref == nil {
				ok.Add(1)
			}
		}(w)
	}
	wg.Wait()
	if ok.Load() != limit {
		t.Fatalf("%d accepted, want exactly %d", ok.Load(), limit)
	}
}

func testUnlimited(t *testing.T, s QuotaStore) {
	for i := 0; i < 50; i++ {
		if ref := send(t, s, login("f@example.test", 0, fmt.Sprint("u", i), 3)); ref != nil {
			t.Fatal(ref)
		}
	}
	if u, _ := s.Usage(context.Background(), "example.test", "login:f@example.test"); u.Used != 150 {
		t.Fatalf("unlimited scope still counted for quota show: %+v", u)
	}
}

// No key without a TTL, ever.
func TestRedisKeysAlwaysHaveTTL(t *testing.T) {
	srv := redistest.Start(t)
	rdb, _ := NewRedisClient(srv.URL(), 2*time.Second)
	defer rdb.Close()
	s := NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Minute})
	ctx := context.Background()
	send(t, s, login("g@example.test", 5, "a", 2))
	s.Reserve(ctx, login("g@example.test", 5, "b", 1))
	s.Release(ctx, login("g@example.test", 5, "b", 1))
	g := NewRedisGuard(rdb, 3, 10, time.Minute, time.Minute)
	for i := 0; i < 3; i++ {
		g.Failed(ctx, "g@example.test", "127.0.0.9", fmt.Sprint("fp", i))
	}
	daily := NewRedisStore(rdb, StoreConfig{Window: 24 * time.Hour, Hold: time.Minute})
	c := &Compromise{NewRecipientsPerHour: 100, VolumeMultiple: 10, MinVolume: 100, History: daily, Hourly: s, Daily: daily, Log: quiet}
	if v := cmpCheck(ctx, c, &Message{Login: "g@example.test", Rcpts: []string{"r@remote.test"}}); v != nil {
		t.Fatal(v)
	}
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatal(keys, err)
	}
	if !slices.Contains(keys, seenKey("example.test", "g@example.test")) || !slices.Contains(keys, "sluice:q:{example.test}:new:g@example.test:log") {
		t.Fatalf("the compromise rule's keys are missing: %v", keys)
	}
	for _, k := range keys {
		if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("key %s has no TTL (%v)", k, ttl)
		}
	}
}

// A store error is ErrStore, and the client recovers by itself when Redis
// comes back.
func TestRedisOutageAndRecovery(t *testing.T) {
	srv := redistest.Start(t)
	rdb, _ := NewRedisClient(srv.URL(), 200*time.Millisecond)
	defer rdb.Close()
	s := NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Minute})
	ctx := context.Background()
	if _, err := s.Reserve(ctx, login("h@example.test", 5, "a", 1)); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	// (Another login: h's room, known from the answer above, would be
	// granted without asking Redis.)
	if _, err := s.Reserve(ctx, login("i@example.test", 5, "b", 1)); err == nil {
		t.Fatal("no error with Redis down")
	}
	if _, err := s.Commit(ctx, login("h@example.test", 5, "a", 1)); err == nil {
		t.Fatal("no error with Redis down (commit)")
	}
	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := s.Reserve(ctx, login("i@example.test", 5, "c", 1))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never recovered: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var _ redis.UniversalClient = (*redis.Client)(nil)

// A Redis on the same host can be reached over its Unix socket
// (redis_url = "unix:///path/redis.sock"): quotas work there as over TCP,
// and a socket that is not there is a store error, not a hang.
func TestRedisOverUnixSocket(t *testing.T) {
	srv := redistest.Start(t)
	if len(srv.SocketURL()) > 110 {
		t.Fatalf("the test's socket path is too long for a Unix socket: %s", srv.SocketURL())
	}
	rdb, err := NewRedisClient(srv.SocketURL(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	st := NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Minute})
	if ref := send(t, st, login("sock@example.test", 2, "t1", 2)); ref != nil {
		t.Fatalf("2 of 2 refused: %+v", ref)
	}
	ref, err := st.Reserve(context.Background(), login("sock@example.test", 2, "t2", 1))
	if err != nil || ref == nil {
		t.Fatalf("the 3rd of 2: refusal %+v, err %v", ref, err)
	}
	// The same counters over TCP: one server.
	tcp, err := NewRedisClient(srv.URL(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	u, err := NewRedisStore(tcp, StoreConfig{Window: time.Hour, Hold: time.Minute}).Usage(context.Background(), "example.test", "login:sock@example.test")
	if err != nil || u.Used != 2 {
		t.Fatalf("usage over TCP %+v, %v; want 2 used", u, err)
	}

	gone, err := NewRedisClient("unix://"+t.TempDir()+"/none.sock", 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gone.Close() })
	_, err = NewRedisStore(gone, StoreConfig{Window: time.Hour, Hold: time.Minute}).Reserve(context.Background(), login("sock@example.test", 2, "t3", 1))
	if !errors.Is(err, ErrStore) {
		t.Fatalf("no socket: %v, want ErrStore", err)
	}
}

// A commit that runs twice (go-redis retrying a call whose answer was
// lost, or submit's own Commit after a batch it could not read) charges
// the message once.
func TestRedisCommitTwiceCountsOnce(t *testing.T) {
	srv := redistest.Start(t)
	st := NewRedisStore(testRedisClient(t, srv.URL()), StoreConfig{Window: time.Hour, Hold: time.Minute})
	ctx := context.Background()
	c := login("twice@example.test", 10, "t1", 2)
	if ref, err := st.Reserve(ctx, c); ref != nil || err != nil {
		t.Fatal(ref, err)
	}
	for i := 0; i < 2; i++ {
		if ref, err := st.Commit(ctx, c); ref != nil || err != nil {
			t.Fatalf("commit %d: %+v %v", i+1, ref, err)
		}
	}
	if u, _ := st.Usage(ctx, "example.test", "login:twice@example.test"); u.Used != 2 || u.Reserved != 0 {
		t.Fatalf("after two commits of one message: %+v, want 2 used", u)
	}
	if err := st.Refund(ctx, c); err != nil {
		t.Fatal(err)
	}
	if u, _ := st.Usage(ctx, "example.test", "login:twice@example.test"); u.Used != 0 {
		t.Fatalf("after the refund: %+v, want 0", u)
	}
}
