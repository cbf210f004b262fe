package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"sluice/screen/redistest"
)

// `sluice quota show/reset` work against the running configuration's
// store: the server's memory (control socket) or Redis; and a login's own
// quota set with `sluice user set --quota` is enforced without a restart.
func TestQuotaCommands(t *testing.T) {
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			extra := "\n[quota]\nmessages_per_hour = 2\n"
			if store == "redis" {
				red := redistest.Start(t)
				extra += fmt.Sprintf("redis_url = %q\n", red.URL())
			}
			s := startServerWith(t, extra, alice)
			for i := 0; i < 2; i++ {
				if r := swaks(t, s.submission, "--tls", "PLAIN", alice, alice.addr, "x@remote.test", "q", "body"); r.exit != 0 {
					t.Fatalf("send %d: %s", i, r)
				}
			}
			r := swaks(t, s.submission, "--tls", "PLAIN", alice, alice.addr, "x@remote.test", "q", "body")
			if r.exit == 0 || !strings.Contains(r.stdout+r.stderr, "451 4.7.1") {
				t.Fatalf("third message: %s", r)
			}
			show := s.cli("quota", "show", alice.addr, "--json")
			var rep quotaReport
			if show.exit != 0 || json.Unmarshal([]byte(show.stdout), &rep) != nil || rep.Used != 2 || rep.Limit != 2 || rep.Resets == "" {
				t.Fatalf("quota show: %s (%+v)", show, rep)
			}
			if res := s.cli("quota", "reset", alice.addr); res.exit != 0 {
				t.Fatalf("quota reset: %s", res)
			}
			if r := swaks(t, s.submission, "--tls", "PLAIN", alice, alice.addr, "x@remote.test", "q", "body"); r.exit != 0 {
				t.Fatalf("after reset: %s", r)
			}
			// A per-login override, picked up by the running server.
			if res := s.cli("user", "set", alice.addr, "--quota", "5"); res.exit != 0 {
				t.Fatalf("user set: %s", res)
			}
			show = s.cli("quota", "show", alice.addr, "--json")
			if json.Unmarshal([]byte(show.stdout), &rep); rep.Limit != 5 || rep.Used != 1 {
				t.Fatalf("after user set --quota 5: %s", show)
			}
			if r := swaks(t, s.submission, "--tls", "PLAIN", alice, alice.addr, "x@remote.test", "q", "body"); r.exit != 0 {
				t.Fatalf("within the raised quota: %s", r)
			}
		})
	}
}
