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
		"options.inc":           "dns { nameserver = [\"127.0.0.1:9\"]; timeout = 0.2s; retransmits = 1; }\n",
	}
	for name, body := range files {
		os.WriteFile(filepath.Join(local, "override.d", name), []byte(body), 0o644)
	}
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

func TestRspamdVerdicts(t *testing.T) {
	url := startRspamd(t)
	r := &Rspamd{URL: url, Budget: 10 * time.Second, Log: quiet}
	gtube := msg("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\nTo: bob@remote.test\nSubject: t\nDate: Tue, 24 Nov 2026 10:00:00 +0000\nMessage-ID: <g@example.test>\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n")
	v := r.Check(context.Background(), gtube)
	if v == nil || v.Code != 550 || v.Enhanced != [3]int{5, 7, 1} || !strings.Contains(v.Message, "judged this message as spam") {
		t.Fatalf("GTUBE: %+v", v)
	}
	clean := msg("info@example.test", []string{"bob@remote.test"}, "From: Info <info@example.test>\nTo: bob@remote.test\nSubject: Meeting tomorrow\nDate: Tue, 24 Nov 2026 10:00:00 +0000\nMessage-ID: <m1@example.test>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nHi Bob,\n\nshall we meet at ten tomorrow?\n\nRegards,\nInfo\n")
	if v := r.Check(context.Background(), clean); v != nil {
		t.Fatalf("clean message: %+v", v)
	}
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
