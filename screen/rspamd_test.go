package screen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startRspamd runs the Debian rspamd with its stock rules, its workers on
// free loopback ports and its DNS pointed at nothing (no query leaves the
// machine).
func startRspamd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("rspamd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("rspamd not found: install the rspamd package")
		}
		t.Skip("rspamd not installed (apt-get install rspamd)")
	}
	dir, err := os.MkdirTemp("", "sluice-rspamd-")
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(dir, "local")
	for _, d := range []string{filepath.Join(local, "override.d"), filepath.Join(dir, "run"), filepath.Join(dir, "db"), filepath.Join(dir, "log")} {
		os.MkdirAll(d, 0o755)
	}
	normal, controller := freePort(t), freePort(t)
	files := map[string]string{
		"worker-normal.inc":     fmt.Sprintf("bind_socket = %q;\n", normal),
		"worker-controller.inc": fmt.Sprintf("bind_socket = %q;\n", controller),
		"worker-proxy.inc":      "enabled = false;\n",
		// The GTUBE variants that ask for "add header" (YJS...) and
		// "rewrite subject" (ZJS...) are test patterns.
		"options.inc": "dns { nameserver = [\"127.0.0.1:9\"]; timeout = 0.2s; retransmits = 1; }\nenable_test_patterns = true;\n",
	}
	for name, body := range files {
		os.WriteFile(filepath.Join(local, "override.d", name), []byte(body), 0o644)
	}
	// No stock rule answers "soft reject" without Redis (greylisting,
	// rate limits); this prefilter does, for a marked subject, the way
	// those modules do (task:set_pre_result).
	os.WriteFile(filepath.Join(local, "rspamd.local.lua"), []byte(rspamdSoftRejectLua), 0o644)
	cmd := exec.Command(bin, "-f", "-i", "-u", "root", "-g", "root", "-c", "/etc/rspamd/rspamd.conf",
		"--var=LOCAL_CONFDIR="+local, "--var=RUNDIR="+filepath.Join(dir, "run"), "--var=DBDIR="+filepath.Join(dir, "db"), "--var=LOGDIR="+filepath.Join(dir, "log"))
	out, _ := os.Create(filepath.Join(dir, "rspamd.out"))
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that its workers die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		os.RemoveAll(dir)
	})
	url := "http://" + normal
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "rspamd.out"))
			t.Fatalf("rspamd did not start: %s", log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

const rspamdSoftRejectLua = `
rspamd_config:register_symbol({
  name = 'SLUICE_TEST_SOFT_REJECT',
  type = 'prefilter',
  priority = 10,
  callback = function(task)
    local subj = task:get_subject() or ''
    if subj:find('sluice-test-soft-reject', 1, true) then
      task:set_pre_result('soft reject', 'rate limit exceeded for this sender', 'sluice_test')
    end
  end,
})
`

// rspamdMsg is a well-formed message with body as its text.
func rspamdMsg(subject, body string) *Message {
	return msg("info@example.test", []string{"bob@remote.test"}, "From: Info <info@example.test>\nTo: bob@remote.test\nSubject: "+subject+
		"\nDate: Tue, 24 Nov 2026 10:00:00 +0000\nMessage-ID: <m1@example.test>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"+body+"\n")
}

// The GTUBE patterns: rspamd answers reject, add header and rewrite
// subject for them.
const (
	gtubeReject  = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	gtubeHeader  = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	gtubeSubject = "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
)

// TestRspamdVerdicts: each Rspamd action, from the real scanner, mapped
// onto a verdict: reject 550 5.7.1, soft reject 451 4.7.1 with the
// scanner's reason, add header and rewrite subject a mark that puts
// X-Spam: Yes and the score in front (or a hold, by config), no action
// nothing.
func TestRspamdVerdicts(t *testing.T) {
	url := startRspamd(t)
	cases := []struct {
		name    string
		hold    bool // AddHeader = "hold"
		m       *Message
		action  Action // Accept: no verdict
		code    int
		enh     [3]int
		mention string
		headers string
	}{
		{name: "reject", m: rspamdMsg("t", gtubeReject), action: Reject, code: 550, enh: [3]int{5, 7, 1}, mention: "judged this message as spam"},
		{name: "soft reject", m: rspamdMsg("sluice-test-soft-reject", "hello"), action: Defer, code: 451, enh: [3]int{4, 7, 1}, mention: "rate limit exceeded for this sender"},
		{name: "add header", m: rspamdMsg("t", gtubeHeader), action: Mark, code: 250, mention: "probable spam (score 6.0", headers: "X-Spam: Yes\r\nX-Spam-Score: 6.00\r\n"},
		{name: "rewrite subject", m: rspamdMsg("t", gtubeSubject), action: Mark, code: 250, mention: "probable spam", headers: "X-Spam: Yes\r\n"},
		{name: "add header held by config", hold: true, m: rspamdMsg("t", gtubeHeader), action: Hold, code: 250, enh: [3]int{2, 0, 0}, mention: "held for review"},
		{name: "clean", m: rspamdMsg("Meeting tomorrow", "Hi Bob,\n\nshall we meet at ten tomorrow?\n\nRegards,\nInfo"), action: Accept},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &Rspamd{URL: url, Budget: 10 * time.Second, Log: quiet}
			if c.hold {
				r.AddHeader = "hold"
			}
			v := r.Check(context.Background(), c.m)
			if c.action == Accept {
				if v != nil {
					t.Fatalf("verdict %+v", v)
				}
				return
			}
			if v == nil || v.Action != c.action || v.Code != c.code || !strings.Contains(v.Message, c.mention) || c.action != Mark && v.Enhanced != c.enh {
				t.Fatalf("got %+v, want %v %d %v mentioning %q", v, c.action, c.code, c.enh, c.mention)
			}
			if !strings.HasPrefix(string(v.Headers), c.headers) || (c.headers == "") != (len(v.Headers) == 0) {
				t.Fatalf("headers %q, want %q", v.Headers, c.headers)
			}
		})
	}
	// Through the pipeline as submit calls it: the mark's fields come
	// back to be put in front of the message; a message held by another
	// rule keeps them for its release.
	t.Run("pipeline", func(t *testing.T) {
		var counted []string
		p := &Pipeline{Log: quiet, Rules: []Rule{Headers{}, &Rspamd{URL: url, Budget: 10 * time.Second, Log: quiet}},
			OnVerdict: func(rule string, a Action) { counted = append(counted, rule+"/"+a.String()) }}
		m := rspamdMsg("t", gtubeHeader)
		hold, hdrs, err := p.ScreenMessageHeaders(context.Background(), m.Login, "mx.sluice.test", m.EnvelopeFrom, m.Rcpts, m.Raw, false)
		if err != nil || hold != "" || !strings.HasPrefix(string(hdrs), "X-Spam: Yes\r\nX-Spam-Score: ") || !strings.HasSuffix(string(hdrs), "\r\n") {
			t.Fatalf("hold %q, headers %q, err %v", hold, hdrs, err)
		}
		if strings.Join(counted, ",") != "rspamd/mark" {
			t.Fatalf("counted %v, want rspamd/mark", counted)
		}
		// An override makes the same verdict a hold, without the fields.
		p.Overrides = map[string]ActionOverrides{"example.test": {"rspamd": "hold"}}
		hold, hdrs, err = p.ScreenMessageHeaders(context.Background(), m.Login, "mx.sluice.test", m.EnvelopeFrom, m.Rcpts, m.Raw, false)
		if err != nil || !strings.HasPrefix(hold, "rspamd: ") || !strings.Contains(hold, "held for review") || len(hdrs) != 0 {
			t.Fatalf("override hold: hold %q, headers %q, err %v", hold, hdrs, err)
		}
		p.Overrides = map[string]ActionOverrides{"example.test": {"rspamd": "reject"}}
		_, _, err = p.ScreenMessageHeaders(context.Background(), m.Login, "mx.sluice.test", m.EnvelopeFrom, m.Rcpts, m.Raw, false)
		if v, ok := err.(*Verdict); !ok || v.Code != 550 || v.Enhanced != [3]int{5, 7, 1} || !strings.Contains(v.Message, "probable spam") {
			t.Fatalf("override reject: %v", err)
		}
	})
}

func TestRspamdDownFallback(t *testing.T) {
	url := "http://" + freePort(t) // nothing listens
	m := msg("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\n\nx\n")
	if v := (&Rspamd{URL: url, Budget: time.Second, Log: quiet}).Check(context.Background(), m); v != nil {
		t.Fatalf("fallback accept: %+v", v)
	}
	v := (&Rspamd{URL: url, Budget: time.Second, Fallback: "defer", Log: quiet}).Check(context.Background(), m)
	if v == nil || v.Code != 451 || v.Enhanced != [3]int{4, 3, 0} {
		t.Fatalf("fallback defer: %+v", v)
	}
}
