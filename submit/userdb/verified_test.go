package userdb

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"sluice/submit"
)

// TestVerifiedCache: a password that matched is not hashed again within
// the TTL; a wrong password, a changed password, an expired entry and a
// cache turned off are always hashed, and never let in a wrong password.
func TestVerifiedCache(t *testing.T) {
	f, err := Open(filepath.Join(t.TempDir(), "users.json"))
	if err != nil {
		t.Fatal(err)
	}
	setPassword := func(pw string) {
		t.Helper()
		h, err := HashPassword(pw)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Update(func(users map[string]*User) error {
			users["a@example.test"] = &User{Address: "a@example.test", Hash: h}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	setPassword("first password")
	f.CacheTTL = time.Hour
	ctx := context.Background()
	auth := func(pw string) (hashed bool, err error) {
		before := hashChecks.Load()
		_, err = f.Authenticate(ctx, "A@example.test", pw)
		return hashChecks.Load() != before, err
	}
	steps := []struct {
		name       string
		do         func()
		pw         string
		wantOK     bool
		wantHashed bool
	}{
		{"first login hashes", nil, "first password", true, true},
		{"second login is remembered", nil, "first password", true, false},
		{"wrong password is hashed and refused", nil, "guess", false, true},
		{"still remembered after a wrong guess", nil, "first password", true, false},
		{"new password: old one refused", func() { setPassword("second password") }, "first password", false, true},
		{"new password accepted", nil, "second password", true, true},
		{"new password remembered", nil, "second password", true, false},
		{"expired entry hashes again", func() {
			f.verified.remember("a@example.test", f.users["a@example.test"].Hash, "second password", time.Now().Add(-time.Second))
		}, "second password", true, true},
		{"cache off hashes every time", func() { f.CacheTTL = 0 }, "second password", true, true},
	}
	for _, st := range steps {
		if st.do != nil {
			st.do()
		}
		hashed, err := auth(st.pw)
		if ok := err == nil; ok != st.wantOK {
			t.Fatalf("%s: login ok=%v (%v), want %v", st.name, ok, err, st.wantOK)
		}
		if err != nil && !errors.Is(err, submit.ErrBadCredentials) {
			t.Fatalf("%s: %v", st.name, err)
		}
		if hashed != st.wantHashed {
			t.Fatalf("%s: hashed=%v, want %v", st.name, hashed, st.wantHashed)
		}
	}
}
