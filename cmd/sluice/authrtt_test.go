package main

// AUTH with redis_url: the lockout check and the suspension check of a
// successful AUTH are one round trip to Redis (the suspension's GET goes
// in the lockout check's pipeline), counted by redis-server itself; the
// suspension read so is judged as before: a suspension recorded by
// another instance refuses the login, and one the user file holds but
// another instance lifted lets it in and enables the file.

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"sluice/screen"
	"sluice/screen/redistest"
	"sluice/submit/userdb"
)

func TestAuthOneRedisRoundTrip(t *testing.T) {
	t.Parallel()
	red := redistest.Start(t)
	bob := testUser{addr: "bob@example.test", password: "bob-secret-pw-1"}
	s := startServerWith(t, "\n[quota]\nredis_url = \""+red.URL()+"\"\n", alice, bob)
	auth := func(u testUser) (int, string) { return shsAuth(t, s.submission, false, u) }
	for range 2 { // sluice's Redis connections are open
		auth(alice)
	}
	var code int
	var text string
	trips, calls := red.RoundTrips(t, func() { code, text = auth(alice) })
	t.Logf("one successful AUTH: %d Redis round trips, commands %v", trips, calls)
	if code != 235 || trips != 1 || calls["pttl"] != 2 || calls["get"] != 1 || len(calls) != 2 {
		t.Fatalf("AUTH: %d %s in %d Redis round trips, commands %v; want 235 in 1, pttl 2 and get 1", code, text, trips, calls)
	}

	rdb := redisClient(t, red)
	store := screen.NewRedisSuspensions(rdb, 0)
	ctx := context.Background()
	const why = "suspended for suspected abuse: 8 first-time recipients within an hour (threshold 3)"
	if _, err := store.Record(ctx, alice.addr, why); err != nil {
		t.Fatal(err)
	}
	want := "login " + alice.addr + " is " + why + "; contact postmaster@mail.sluice.test to check the account and have it enabled"
	if code, text := auth(alice); code != 535 || !strings.HasPrefix(text, "5.7.8 ") || !strings.HasSuffix(text, want) {
		t.Errorf("AUTH of a login another instance suspended: %d %s, want 535 5.7.8 %s", code, text, want)
	}
	if code, text := auth(testUser{addr: alice.addr, password: "wrong password"}); code != 535 || strings.Contains(text, "suspend") {
		t.Errorf("wrong password of a suspended login: %d %s, want 535 saying nothing of the suspension", code, text)
	}

	// The user file says suspended; another instance lifted it.
	users, err := userdb.Open(filepath.Join(s.dataDir, "users.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := users.Suspend(ctx, bob.addr, why); err != nil {
		t.Fatal(err)
	}
	if code, text := auth(bob); code != 535 || !strings.Contains(text, bob.addr+" is "+why) {
		t.Fatalf("AUTH of a login the user file suspends: %d %s, want 535", code, text)
	}
	if _, err := store.Lift(ctx, bob.addr); err != nil {
		t.Fatal(err)
	}
	if code, text := auth(bob); code != 235 {
		t.Fatalf("AUTH after another instance lifted the suspension: %d %s, want 235", code, text)
	}
	opsWait(t, opsTimeout, "the user file enables "+bob.addr, func() (bool, string) {
		u, err := users.Get(bob.addr)
		return err == nil && !u.Disabled, s.stderr.String()
	})
}
