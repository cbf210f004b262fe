package main

// Admin API and shared suspensions (run from TestAdminAPI, whose check
// that every documented status was seen covers these calls too): the
// usage answer shows a suspension of the suspension store, PATCH
// disabled=false and DELETE .../suspension lift it, also for logins of a
// read-only backend, and a store that cannot answer is 503 with nothing
// changed.

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/screen"
	"sluice/screen/redistest"
)

// shsUsage is the state part of GET .../usage.
type shsUsage struct {
	State struct {
		Suspended, Disabled bool
		Reason              string
		Since               *time.Time
	} `json:"state"`
}

func shsGetUsage(t *testing.T, s *admServer, login string) shsUsage {
	t.Helper()
	var u shsUsage
	s.call(t, 200, "GET", "/api/v1/logins/"+login+"/usage", "").json(t, &u)
	return u
}

// shsTrip sends one message to 4 first-time recipients as u (the admin
// tests' servers suspend at more than 3), checks it was queued (to be
// held) and returns its queue ID.
func shsTrip(t *testing.T, s *sluiceServer, u testUser) string {
	t.Helper()
	c := opsLogin(t, s.submission, false, u)
	defer c.quit()
	rcpts := []string{"s1@remote.test", "s2@remote.test", "s3@remote.test", "s4@remote.test"}
	r, err := c.sendMany(u.addr, rcpts, opsMessage(u.addr, rcpts[0], "shs"))
	id, ok := r.queued()
	if err != nil || !ok {
		t.Fatalf("message to 4 new recipients: %v %v, want 250 queued (held)", r, err)
	}
	return id
}

// shsTestAdminLift: DELETE .../suspension gives a suspended login of the
// user file back; a login that is not suspended is 404.
func shsTestAdminLift(t *testing.T, s *admServer) {
	trip := testUser{addr: "trip@adm.test", password: "trip-secret-pw-1"}
	s.call(t, 201, "POST", "/api/v1/logins", `{"address":"trip@adm.test","password":"trip-secret-pw-1"}`)
	if r := s.call(t, 404, "DELETE", "/api/v1/logins/trip@adm.test/suspension", ""); !strings.Contains(r.errorText(t), "trip@adm.test is not suspended") {
		t.Errorf("lifting a login that is not suspended: %s", r)
	}
	shsTrip(t, s.sluiceServer, trip)
	if u := shsGetUsage(t, s, trip.addr); !u.State.Suspended || !u.State.Disabled || !strings.HasPrefix(u.State.Reason, "suspended for suspected abuse") {
		t.Fatalf("usage after the compromise rule: %+v", u.State)
	}
	if code := whAuthCode(t, s.sluiceServer, trip); code != 535 {
		t.Fatalf("AUTH of the suspended login: %d, want 535", code)
	}
	s.call(t, 204, "DELETE", "/api/v1/logins/trip@adm.test/suspension", "")
	s.wantLog(t, `what="suspension lifted"`, "login=trip@adm.test", "by=admin_token")
	if u := shsGetUsage(t, s, trip.addr); u.State.Suspended || u.State.Disabled || u.State.Reason != "" {
		t.Errorf("usage after the lift: %+v", u.State)
	}
	if code := whAuthCode(t, s.sluiceServer, trip); code != 235 {
		t.Errorf("AUTH after the lift: %d, want 235", code)
	}
	s.call(t, 404, "DELETE", "/api/v1/logins/trip@adm.test/suspension", "")
	// A login an operator disabled is not "suspended": DELETE leaves it.
	s.call(t, 200, "PATCH", "/api/v1/logins/trip@adm.test", `{"disabled":true,"reason":"unpaid invoice"}`)
	s.call(t, 404, "DELETE", "/api/v1/logins/trip@adm.test/suspension", "")
	if code := whAuthCode(t, s.sluiceServer, trip); code != 535 {
		t.Errorf("AUTH of the operator-disabled login after DELETE .../suspension: %d, want 535", code)
	}
	s.call(t, 404, "DELETE", "/api/v1/logins/not-an-address/suspension", "").errorText(t)
}

// shsTestAdminReadOnly: with only Dovecot for logins, a suspension Sluice
// recorded (in data_dir/suspended.json, as the compromise rule does for
// such logins) reads in usage and is lifted by DELETE .../suspension.
func shsTestAdminReadOnly(t *testing.T) {
	s := admStart(t, "backends = [\"dovecot\"]\n[auth.dovecot]\nsocket = \"127.0.0.1:9\"\ngrants = \"none\"\n", "")
	const login = "mailbox@dovecot.test"
	const why = "suspended for suspected abuse: 900 first-time recipients within an hour (threshold 500)"
	if u := shsGetUsage(t, s, login); u.State.Suspended || u.State.Since != nil {
		t.Fatalf("usage before: %+v", u.State)
	}
	store := screen.OpenFileSuspensions(filepath.Join(s.dataDir, "suspended.json"), 0)
	if _, err := store.Record(context.Background(), login, why); err != nil {
		t.Fatal(err)
	}
	u := shsGetUsage(t, s, login)
	if !u.State.Suspended || !u.State.Disabled || u.State.Reason != why || u.State.Since == nil || time.Since(*u.State.Since) > time.Minute {
		t.Errorf("usage of a suspended Dovecot login: %+v", u.State)
	}
	if r := s.call(t, 409, "PATCH", "/api/v1/logins/"+login, `{"disabled":false}`); !strings.Contains(r.errorText(t), "DELETE /api/v1/logins/{login}/suspension") {
		t.Errorf("PATCH of a read-only login does not point to the lift: %s", r)
	}
	s.call(t, 204, "DELETE", "/api/v1/logins/"+login+"/suspension", "")
	if r, err := store.Suspended(context.Background(), login); r != "" || err != nil {
		t.Errorf("after DELETE the store still says %q (%v)", r, err)
	}
	if u := shsGetUsage(t, s, login); u.State.Suspended || u.State.Disabled {
		t.Errorf("usage after the lift: %+v", u.State)
	}
	s.call(t, 404, "DELETE", "/api/v1/logins/"+login+"/suspension", "")
}

// shsTestAdminRedis (Redis up): a suspension another instance recorded
// in Redis reads in usage with its time, refuses AUTH, and PATCH
// disabled=false lifts it.
func shsTestAdminRedis(t *testing.T, s *admServer, red *redistest.Server) {
	rdb := redisClient(t, red)
	const why = "suspended for suspected abuse: 12 first-time recipients within an hour (threshold 10)"
	if _, err := screen.NewRedisSuspensions(rdb, 0).Record(context.Background(), alice.addr, why); err != nil {
		t.Fatal(err)
	}
	u := shsGetUsage(t, s, alice.addr)
	if !u.State.Suspended || !u.State.Disabled || u.State.Reason != why || u.State.Since == nil {
		t.Errorf("usage of a login suspended in Redis: %+v", u.State)
	}
	if code := whAuthCode(t, s.sluiceServer, alice); code != 535 {
		t.Errorf("AUTH of a login suspended in Redis: %d, want 535", code)
	}
	s.call(t, 200, "PATCH", "/api/v1/logins/alice@example.test", `{"disabled":false}`)
	s.wantLog(t, `what="login updated"`, "login=alice@example.test", "suspension=lifted")
	if code := whAuthCode(t, s.sluiceServer, alice); code != 235 {
		t.Errorf("AUTH after PATCH disabled=false: %d, want 235", code)
	}
}

// shsTestAdminRedisDown (Redis stopped): lifting answers 503 and changes
// nothing.
func shsTestAdminRedisDown(t *testing.T, s *admServer) {
	s.call(t, 200, "PATCH", "/api/v1/logins/alice@example.test", `{"quota":7}`) // no lift: no store needed
	for _, c := range []struct{ method, path, body string }{
		{"PATCH", "/api/v1/logins/alice@example.test", `{"disabled":false,"quota":1}`},
		{"DELETE", "/api/v1/logins/alice@example.test/suspension", ""},
	} {
		if r := s.call(t, 503, c.method, c.path, c.body); !strings.Contains(r.errorText(t), "suspension store did not answer") {
			t.Errorf("%s %s with Redis down: %s", c.method, c.path, r)
		}
	}
	var l loginJSON
	s.call(t, 200, "GET", "/api/v1/logins/alice@example.test", "").json(t, &l)
	if l.Quota == nil || *l.Quota != 7 {
		t.Errorf("the refused PATCH changed the login: %+v", l)
	}
}
