package submit_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"sluice/relay/spool"
	"sluice/submit"
)

// A full spool disk gets 452 4.3.1, never 250, and nothing is queued.
func TestSpoolFullIsTemporaryRefusal(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
		t.Skipf("cannot mount a small tmpfs (%v); run as root to test a full spool (under CI=true this fails)", err)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, func(s *submit.Server) { s.Spool = sp; s.Limits.MaxMessageSize = 1 << 20 })
	c := g.login(t, "info@example.test")
	body := strings.Repeat(strings.Repeat("z", 76)+"\r\n", 1500) // ~117 KB > 64 KB disk
	r := c.send("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\r\n\r\n"+body)
	if r.code != 452 || r.enhanced != "4.3.1" {
		t.Fatalf("got %v, want 452 4.3.1", r)
	}
	if strings.Contains(r.text, "/") || strings.Contains(r.text, "spool:") {
		t.Errorf("internal detail leaked to the client: %q", r.text)
	}
	if ids, _ := sp.List(); len(ids) != 0 {
		t.Fatalf("queued: %v", ids)
	}
	// A small message still fits afterwards: the failed one left nothing behind.
	if r := c.send("info@example.test", []string{"bob@remote.test"}, simpleMessage("info@example.test", "bob@remote.test", "small")); r.code != 250 {
		t.Fatalf("small message after full: %v", r)
	}
}
