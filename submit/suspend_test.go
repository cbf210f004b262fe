package submit_test

import (
	"context"
	"strings"
	"testing"
)

// A login suspended by the compromise rule is told so at its next login,
// with whom to contact; `sluice user enable` (Disabled=false) lets it in.
func TestSuspendedLoginIsToldWhy(t *testing.T) {
	g := startGateway(t)
	if err := g.users.Suspend(context.Background(), "info@example.test", "suspended for suspected abuse: 900 first-time recipients within an hour (threshold 500)"); err != nil {
		t.Fatal(err)
	}
	c := dial(t, g.implicit, true)
	c.cmd("EHLO client.test")
	r := c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", testPassword))
	if r.code != 535 || r.enhanced != "5.7.8" || !strings.Contains(r.text, "suspended for suspected abuse") || !strings.Contains(r.text, "contact postmaster@mx.sluice.test") {
		t.Fatalf("got %v", r)
	}
}
