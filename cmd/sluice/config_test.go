package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The example config must load as it is and equal the embedded defaults
// (apart from the listen addresses, which depend on the user).
func TestExampleConfigLoads(t *testing.T) {
	c, err := loadConfig(filepath.Join("..", "..", "sluice.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	d := defaultConfig()
	if c.Submission.MaxMessageSize != d.Submission.MaxMessageSize || c.Submission.MaxRecipients != d.Submission.MaxRecipients ||
		c.Auth.Lockout != d.Auth.Lockout || c.Spool.GroupCommit != d.Spool.GroupCommit || c.DataDir != d.DataDir {
		t.Fatalf("example config differs from the defaults:\n%+v\n%+v", c, d)
	}
}

func TestEnvOverrides(t *testing.T) {
	t.Setenv("SLUICE_SUBMISSION_LISTEN", "127.0.0.1:1587, 127.0.0.2:1587")
	t.Setenv("SLUICE_DATA_DIR", "/srv/sluice")
	t.Setenv("SLUICE_HOSTNAME", "relay.example.test")
	t.Setenv("SLUICE_REDIS_URL", "redis://127.0.0.1:6390/0")
	c, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Submission.Listen) != 2 || c.DataDir != "/srv/sluice" || c.Hostname != "relay.example.test" || c.Quota.RedisURL != "redis://127.0.0.1:6390/0" {
		t.Fatalf("%+v", c)
	}
}

func TestBadConfigIsOneClearLine(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"unknown key":      "hostnme = \"x\"\n",
		"syntax":           "[submission\nlisten = 1\n",
		"wrong type":       "[submission]\nmax_recipients = \"many\"\n",
		"bad duration":     "[auth]\nlockout = \"forever\"\n",
		"bad listen":       "[submission]\nlisten = [\"587\"]\n",
		"half tls":         "[tls]\ncert_file = \"/x.pem\"\n",
		"unsigned webhook": "[[webhooks]]\nurl = \"https://hooks.example.test/sluice\"\n",
		"sql placeholder":  "[auth]\nbackends = [\"sql\"]\n[auth.sql]\ndriver = \"postgres\"\ndsn = \"postgres://127.0.0.1/x\"\npassword_query = \"SELECT hash FROM mailbox\"\n",
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name+".toml")
			os.WriteFile(p, []byte(body), 0o600)
			_, err := loadConfig(p)
			if err == nil {
				t.Fatal("accepted")
			}
			if msg := err.Error(); len(msg) == 0 || containsNewline(msg) {
				t.Fatalf("error is not one line: %q", msg)
			}
		})
	}
}

func containsNewline(s string) bool {
	for _, c := range s {
		if c == '\n' {
			return true
		}
	}
	return false
}
