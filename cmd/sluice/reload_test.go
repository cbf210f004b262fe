package main

import (
	"reflect"
	"testing"
	"time"
)

// TestReloadableKeys: a reload applies the keys it can and keeps the running
// value of every other key, naming each one that needs a restart.
func TestReloadableKeys(t *testing.T) {
	cases := []struct {
		name     string
		change   func(c *Config)
		wantCold []string
		applied  func(c *Config) bool
	}{
		{"nothing changed", func(c *Config) {}, nil, nil},
		{"quota limit applies", func(c *Config) { c.Quota.MessagesPerHour = 7 }, nil,
			func(c *Config) bool { return c.Quota.MessagesPerHour == 7 }},
		{"screen rule applies", func(c *Config) { c.Screen.WebForm = "allow" }, nil,
			func(c *Config) bool { return c.Screen.WebForm == "allow" }},
		{"certificate applies", func(c *Config) { c.TLS.CertFile = "/x.crt"; c.TLS.KeyFile = "/x.key" }, nil,
			func(c *Config) bool { return c.TLS.CertFile == "/x.crt" }},
		{"hostname needs a restart", func(c *Config) { c.Hostname = "other.test" }, []string{"hostname"},
			func(c *Config) bool { return c.Hostname == "mail.sluice.test" }},
		{"listen and idle timeout need a restart", func(c *Config) {
			c.Submission.Listen = []string{"127.0.0.1:1"}
			c.Submission.IdleTimeout = Duration{time.Second}
		}, []string{"submission.listen", "submission.idle_timeout"},
			func(c *Config) bool {
				return len(c.Submission.Listen) == 1 && c.Submission.Listen[0] == "127.0.0.1:2587"
			}},
		{"nested auth keys need a restart", func(c *Config) { c.Auth.SQL.DSN = "postgres://x" }, []string{"auth.sql.dsn"},
			func(c *Config) bool { return c.Auth.SQL.DSN == "" }},
		{"loop window inside [screen] needs a restart", func(c *Config) {
			c.Screen.LoopWindow = Duration{time.Hour}
			c.Screen.LoopRepeats = 3
		}, []string{"screen.loop_window"},
			func(c *Config) bool {
				return c.Screen.LoopRepeats == 3 && c.Screen.LoopWindow.Duration == 10*time.Minute
			}},
		{"admin token rotates", func(c *Config) { c.HTTP.AdminToken = "new-token" }, nil,
			func(c *Config) bool { return c.HTTP.AdminToken == "new-token" }},
		{"webhooks need a restart", func(c *Config) {
			c.Webhooks = append(c.Webhooks, struct {
				URL    string   `toml:"url"`
				Secret string   `toml:"secret"`
				Events []string `toml:"events"`
			}{URL: "http://127.0.0.1:1/"})
		}, []string{"webhooks"}, func(c *Config) bool { return len(c.Webhooks) == 0 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			running := defaultConfig()
			running.Hostname = "mail.sluice.test"
			running.Submission.Listen = []string{"127.0.0.1:2587"}
			running.HTTP.AdminToken = "old-token"
			next := defaultConfig()
			next.HTTP.AdminToken = "old-token"
			next.Hostname = running.Hostname
			next.Submission.Listen = []string{"127.0.0.1:2587"}
			tc.change(next)
			eff, cold := reloadable(running, next)
			if !reflect.DeepEqual(cold, tc.wantCold) {
				t.Errorf("keys needing a restart: %q, want %q", cold, tc.wantCold)
			}
			if tc.applied != nil && !tc.applied(eff) {
				t.Errorf("effective configuration does not hold the expected values: %+v", eff)
			}
			// Reloading the effective configuration again changes nothing.
			if _, again := reloadable(eff, eff); len(again) != 0 {
				t.Errorf("second reload of the same file warns of %q", again)
			}
			// The pending change is still reported on a second SIGHUP.
			if _, again := reloadable(eff, next); !reflect.DeepEqual(again, tc.wantCold) {
				t.Errorf("second reload with the change pending warns of %q, want %q", again, tc.wantCold)
			}
		})
	}
}

// TestReloadCannotSwitchOnAdminAPI: the admin API is set up at start, so a
// token where there was none needs a restart and is not taken.
func TestReloadCannotSwitchOnAdminAPI(t *testing.T) {
	running, next := defaultConfig(), defaultConfig()
	next.HTTP.AdminToken = "t"
	eff, cold := reloadable(running, next)
	if eff.HTTP.AdminToken != "" || !reflect.DeepEqual(cold, []string{"http.admin_token"}) {
		t.Fatalf("token %q, cold %q", eff.HTTP.AdminToken, cold)
	}
}
