package main

// With redis_url, an accepted message well within its login's quota costs
// one Redis round trip, counted by redis-server itself: the content
// screen's counts (loop and compromise) with the quota's charge; RCPT's
// quota pre-check is answered from the room the last charge reported. The
// charge is there: the login's usage grows by one a message.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"sluice/screen"
	"sluice/screen/redistest"

	"github.com/redis/go-redis/v9"
)

func TestMessageOneRedisRoundTrip(t *testing.T) {
	t.Parallel()
	red := redistest.Start(t)
	httpAddr := freeAddr(t)
	s := startServerWith(t, "\n[quota]\nredis_url = \""+red.URL()+"\"\nmessages_per_hour = 100\n[http]\nlisten = \""+httpAddr+"\"\n", alice)
	c := opsLogin(t, s.submission, false, alice)
	defer c.quit()
	send := func(i int) opsReply {
		t.Helper()
		r, err := c.send(alice.addr, fmt.Sprintf("rcpt%d@remote.test", i), opsMessage(alice.addr, fmt.Sprintf("rcpt%d@remote.test", i), fmt.Sprint("round trips ", i)))
		if err != nil || r.code != 250 {
			t.Fatalf("message %d: %+v %v", i, r, err)
		}
		return r
	}
	for i := range 3 { // sluice's Redis connections are open, the scripts loaded
		send(i)
	}
	trips, calls := red.RoundTrips(t, func() { send(3) })
	t.Logf("one accepted message: %d Redis round trips, commands %v", trips, calls)
	if trips != 1 || calls["evalsha"] != 1 {
		t.Fatalf("one message: %d Redis round trips, %d scripts; want 1 and 1 (counts and charge)", trips, calls["evalsha"])
	}
	if u, err := msgUsage(t, red, alice.addr); err != nil || u.Used != 4 || u.Reserved != 0 {
		t.Fatalf("usage after 4 messages: %+v, %v; want 4 used, none reserved", u, err)
	}
	// The first RCPT asked Redis (nothing known yet); the other three were
	// granted from the room the charges before them reported.
	opsWaitStatus(t, "http://"+httpAddr+"/metrics", 200)
	m := opsScrape(t, "http://"+httpAddr)
	got := m.series("sluice_quota_prechecks_total")
	want := map[string]float64{"answer=known-room": 3, "answer=no-limit": 0, "answer=redis": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("sluice_quota_prechecks_total %v, want %v", got, want)
	}
}

// A message charged with the screen's counts and then refused (here the
// compromise rule, overridden to reject, refuses the third first-time
// recipient) gets its charge back: the usage counts only what was queued.
func TestChargedThenRefusedIsRefunded(t *testing.T) {
	t.Parallel()
	red := redistest.Start(t)
	s := startServerWith(t, "\n[quota]\nredis_url = \""+red.URL()+"\"\nmessages_per_hour = 100\n"+
		"\n[screen]\nnew_recipients_per_hour = 2\n[screen.overrides.\"alice@example.test\"]\ncompromise = \"reject\"\n", alice)
	c := opsLogin(t, s.submission, false, alice)
	defer c.quit()
	var codes []int
	for i := range 3 {
		rcpt := fmt.Sprintf("stranger%d@remote.test", i)
		r, err := c.send(alice.addr, rcpt, opsMessage(alice.addr, rcpt, fmt.Sprint("refund ", i)))
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, r.code)
	}
	if codes[0] != 250 || codes[1] != 250 || codes[2]/100 != 5 {
		t.Fatalf("replies %v, want 250 250 5xx (the compromise rule set to reject)", codes)
	}
	if u, err := msgUsage(t, red, alice.addr); err != nil || u.Used != 2 || u.Reserved != 0 {
		t.Fatalf("usage: %+v, %v; want the 2 queued messages, nothing reserved", u, err)
	}
}

// msgUsage is login's hourly quota usage as the Redis at red holds it.
func msgUsage(t *testing.T, red *redistest.Server, login string) (screen.Usage, error) {
	t.Helper()
	st := screen.NewRedisStore(redisClient(t, red), screen.StoreConfig{Window: time.Hour, Hold: time.Minute})
	return st.Usage(context.Background(), login[strings.LastIndexByte(login, '@')+1:], "login:"+login)
}

// redisClient is a client of the Redis at red, as another instance would
// have, closed when the test ends.
func redisClient(t *testing.T, red *redistest.Server) redis.UniversalClient {
	t.Helper()
	rdb, err := screen.NewRedisClient(red.URL(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}
