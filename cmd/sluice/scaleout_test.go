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
