package main

// Scale-out: several "sluice serve" instances behind one load balancer
// share one Redis for the hourly quota and the failed-login lockout, and
// each delivers its own spool.

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/screen/redistest"
)

// TestScaleOutSharedRedis: three instances, each with its own data
// directory and ports, share one redis-server. 30 concurrent attempts from
// one login spread over them get exactly messages_per_hour accepted in
// all, the rest 451 4.7.1; five wrong passwords spread over them lock the
// login out on every instance; and each instance delivers its own spool to
// the smarthost, every accepted message exactly once.
func TestScaleOutSharedRedis(t *testing.T) {
	t.Parallel()
	const (
		instances = 3
		perHour   = 12
		attempts  = 30
	)
	red := redistest.Start(t)
	sink := opsStartSink(t, false) // deferring until the spools are checked
	extra := fmt.Sprintf("\n[quota]\nredis_url = %q\nmessages_per_hour = %d\n", red.URL(), perHour) + sink.relayTOML()
	var srvs []*sluiceServer
	for i := 0; i < instances; i++ {
		srvs = append(srvs, startServerWith(t, extra, alice))
	}

	// ---- the shared hourly quota
	type outcome struct {
		instance int
		tag      string
		reply    opsReply
		err      error
	}
	results := make([]outcome, attempts)
	start := make(chan struct{})
	var wg, ready sync.WaitGroup
	for k := 0; k < attempts; k++ {
		wg.Add(1)
		ready.Add(1)
		go func(k int) {
			defer wg.Done()
			loggedIn := false
			defer func() {
				if !loggedIn {
					ready.Done()
				}
			}()
			s := srvs[k%instances]
			implicit := k%2 == 1
			addr := s.submission
			if implicit {
				addr = s.tlsAddr
			}
			tag := "scale-" + opsLetters(k)
			c, err := opsDial(addr, implicit)
			if err != nil {
				results[k] = outcome{k % instances, tag, opsReply{}, err}
				return
			}
			defer c.quit()
			if code, text, err := c.auth(alice.addr, alice.password); err != nil || code != 235 {
				results[k] = outcome{k % instances, tag, opsReply{"AUTH", code, text}, err}
				return
			}
			loggedIn = true
			ready.Done()
			<-start // every session logged in: now they race for the quota
			r, err := c.send(alice.addr, "frank@remote.test", opsMessage(alice.addr, "frank@remote.test", tag))
			results[k] = outcome{k % instances, tag, r, err}
		}(k)
	}
	ready.Wait()
	close(start)
	wg.Wait()

	accepted := map[string]string{} // queue ID -> tag
	acceptedBy := make([]map[string]string, instances)
	for i := range acceptedBy {
		acceptedBy[i] = map[string]string{}
	}
	refused := 0
	for _, o := range results {
		if id, ok := o.reply.queued(); ok && o.err == nil {
			accepted[id] = o.tag
			acceptedBy[o.instance][id] = o.tag
			continue
		}
		if o.err == nil && o.reply.code == 451 && strings.HasPrefix(o.reply.text, "4.7.1 ") && (o.reply.stage == "RCPT" || o.reply.stage == "message") {
			refused++
			continue
		}
		t.Errorf("attempt %s on instance %d: %v (err %v), want 250 queued or 451 4.7.1", o.tag, o.instance, o.reply, o.err)
	}
	if len(accepted) != perHour || refused != attempts-perHour {
		t.Fatalf("%d attempts over %d instances sharing messages_per_hour = %d: %d accepted, %d refused with 451 4.7.1; want %d and %d",
			attempts, instances, perHour, len(accepted), refused, perHour, attempts-perHour)
	}
	t.Logf("accepted per instance: %d, %d, %d", len(acceptedBy[0]), len(acceptedBy[1]), len(acceptedBy[2]))
	for i, s := range srvs {
		var rep quotaReport
		show := s.cli("quota", "show", alice.addr, "--json")
		if show.exit != 0 || json.Unmarshal([]byte(show.stdout), &rep) != nil || rep.Used != perHour || rep.Limit != perHour {
			t.Errorf("instance %d: sluice quota show: %+v, want used %d of %d\n%s", i, rep, perHour, perHour, show)
		}
		// Each instance spooled what it acknowledged, and only that.
		ids := spoolIDs(t, s.dataDir)
		if len(ids) != len(acceptedBy[i]) {
			t.Errorf("instance %d spools %d messages, acknowledged %d", i, len(ids), len(acceptedBy[i]))
		}
		for id, tag := range acceptedBy[i] {
			sp := readSpooled(t, s.dataDir, id)
			if m := opsTagRe.FindSubmatch(sp.msg); m == nil || string(m[1]) != tag {
				t.Errorf("instance %d: spool file %s does not hold %s", i, id, tag)
			}
		}
	}

	// ---- the shared lockout: max_failures_per_login = 5 in the base config
	for k := 0; k < 5; k++ {
		s := srvs[k%instances]
		c, err := opsDial(s.submission, false)
		if err != nil {
			t.Fatal(err)
		}
		code, text, err := c.auth(alice.addr, fmt.Sprintf("wrong-password-%c", 'a'+k))
		c.conn.Close()
		wantCode, wantEnh := 535, "5.7.8"
		if k == 4 { // the fifth distinct guess locks the login out
			wantCode, wantEnh = 421, "4.7.0"
		}
		if err != nil || code != wantCode || !strings.HasPrefix(text, wantEnh+" ") {
			t.Fatalf("wrong password %d on instance %d: %d %s (%v), want %d %s", k+1, k%instances, code, text, err, wantCode, wantEnh)
		}
	}
	for i, s := range srvs {
		for _, implicit := range []bool{false, true} {
			addr := s.submission
			if implicit {
				addr = s.tlsAddr
			}
			c, err := opsDial(addr, implicit)
			if err != nil {
				t.Fatal(err)
			}
			code, text, err := c.auth(alice.addr, alice.password)
			if err != nil || code != 421 || !strings.HasPrefix(text, "4.7.0 ") {
				t.Errorf("instance %d (%s): the right password after the lockout: %d %s (%v), want 421 4.7.0", i, addr, code, text, err)
			}
			c.conn.Close()
		}
	}

	// ---- delivery: each instance empties its own spool into the sink
	sink.setOpen(true)
	opsWaitDelivered(t, sink, accepted, srvs...)
}

// shsShop is the login whose password is stolen in the shared-suspension
// tests.
var shsShop = testUser{addr: "shop@scale.test", password: "shop-scale-pw-1", grants: []string{"@scale.test"}}

const shsContact = "abuse@relay.scale.test"

// shsAuth logs in on addr and returns the reply.
func shsAuth(t testing.TB, addr string, implicit bool, u testUser) (int, string) {
	t.Helper()
	c, err := opsDial(addr, implicit)
	if err != nil {
		t.Fatal(err)
	}
	defer c.quit()
	code, text, err := c.auth(u.addr, u.password)
	if err != nil {
		t.Fatal(err)
	}
	return code, text
}

// shsWantSuspended asserts the suspended-login reply on both listeners of s.
func shsWantSuspended(t *testing.T, s *sluiceServer, name string, u testUser, why string) {
	t.Helper()
	want := "5.7.8 login " + u.addr + " is " + why + "; contact " + shsContact + " to check the account and have it enabled"
	for _, implicit := range []bool{false, true} {
		addr := s.submission
		if implicit {
			addr = s.tlsAddr
		}
		if code, text := shsAuth(t, addr, implicit, u); code != 535 || text != want {
			t.Errorf("instance %s (%s): AUTH as the suspended login: %d %s\nwant 535 %s", name, addr, code, text, want)
		}
	}
}

// TestScaleOutSharedSuspension: two instances share one Redis, each with
// its own data dir and its own users file. The compromise rule trips on
// A; B refuses the login from then on (its own users file does not say
// so), the platform is told once, and `sluice user enable` against B's
// configuration lets the login in on both again, A's users file included.
func TestScaleOutSharedSuspension(t *testing.T) {
	t.Parallel()
	red := redistest.Start(t)
	recv := whStartReceiver(t)
	extra := fmt.Sprintf("\n[quota]\nredis_url = %q\n\n[screen]\nnew_recipients_per_hour = 3\nvolume_multiple = 0.0\nabuse_contact = %q\n",
		red.URL(), shsContact) + whTOML(recv, []string{"login.suspended"})
	a := startServerWith(t, extra, shsShop)
	b := startServerWith(t, extra, shsShop)
	if code, text := shsAuth(t, b.submission, false, shsShop); code != 235 {
		t.Fatalf("instance B before the suspension: %d %s", code, text)
	}

	// The password is stolen: a burst of strangers through A, and the
	// session goes on sending (each message trips the rule again).
	c := opsLogin(t, a.submission, false, shsShop)
	for i, rcpts := range [][]string{
		{"a1@list.test", "a2@list.test", "a3@list.test", "a4@list.test"},
		{"a5@list.test", "a6@list.test"},
	} {
		r, err := c.sendMany(shsShop.addr, rcpts, opsMessage(shsShop.addr, rcpts[0], fmt.Sprintf("burst%d", i)))
		id, ok := r.queued()
		if err != nil || !ok || !strings.HasPrefix(screenHold(t, a.dataDir, id), "compromise: ") {
			t.Fatalf("burst message %d on A: %v %v, want 250 held by the compromise rule", i, r, err)
		}
	}
	c.quit()
	const why = "suspended for suspected abuse: 4 first-time recipients within an hour (threshold 3)"

	shsWantSuspended(t, b, "B", shsShop, why)
	shsWantSuspended(t, a, "A", shsShop, why)

	t.Run("user-show-on-B-reads-the-shared-store", func(t *testing.T) {
		u := hdUserShow(t, b, shsShop.addr)
		since, err := time.Parse(time.RFC3339, u["since"])
		if u["state"] != "suspended" || u["reason"] != why || err != nil || time.Since(since) > time.Minute {
			t.Errorf("sluice user show on B: %v, want state suspended, the reason and since just now", u)
		}
		// B's own users file was not written: the store holds it.
		if l := b.cli("user", "list"); l.exit != 0 || !strings.Contains(l.stdout, shsShop.addr+"  enabled") {
			t.Errorf("sluice user list on B:\n%s", l)
		}
		if l := a.cli("user", "list"); l.exit != 0 || !strings.Contains(l.stdout, shsShop.addr+"  disabled") {
			t.Errorf("sluice user list on A, whose users file records the suspension too:\n%s", l)
		}
	})

	t.Run("platform-told-once", func(t *testing.T) {
		opsWait(t, opsTimeout, "the login.suspended event delivered and both outboxes empty", func() (bool, string) {
			n := recv.byType()["login.suspended"]
			return n >= 1 && len(whOutbox(t, a.dataDir)) == 0 && len(whOutbox(t, b.dataDir)) == 0, fmt.Sprintf("received %d", n)
		})
		got := recv.requests()
		if len(got) != 1 || got[0].data["login"] != shsShop.addr || got[0].data["reason"] != why || got[0].data["disabled_in_sluice"] != true {
			t.Fatalf("login.suspended events: %+v, want one for %s with disabled_in_sluice true", got, shsShop.addr)
		}
		whCheckEvent(t, admLoadSpec(t), got[0])
	})

	t.Run("enable-on-B-lifts-it-on-both", func(t *testing.T) {
		r := b.cli("user", "enable", shsShop.addr)
		if r.exit != 0 || !strings.Contains(r.stdout, "login "+shsShop.addr+" enabled\n") || !strings.Contains(r.stdout, "suspension lifted on every instance (Redis)") {
			t.Fatalf("sluice user enable on B:\n%s", r)
		}
		for _, s := range []struct {
			name string
			srv  *sluiceServer
		}{{"B", b}, {"A", a}} {
			if code, text := shsAuth(t, s.srv.submission, false, shsShop); code != 235 {
				t.Errorf("instance %s after enable: %d %s, want 235", s.name, code, text)
			}
		}
		// A's users file caught up at that login.
		if u := hdUserShow(t, a, shsShop.addr); u["state"] != "enabled" || u["reason"] != "" || u["lifted"] != "" {
			t.Errorf("sluice user show on A after the lift and a login: %v", u)
		}
		if !strings.Contains(a.stderr.String(), "suspension lifted elsewhere; login enabled in the user file") {
			t.Error("A did not log that it enabled the login in its users file")
		}
	})
}
