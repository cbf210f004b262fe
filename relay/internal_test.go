package relay

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A destination has at most PerDomain slots; a waiter gives up when its
// context ends; once nobody holds or waits for a destination it is
// forgotten, so the map does not grow with every domain ever mailed.
func TestDomainSlotsLimitAndForget(t *testing.T) {
	r := New(Config{PerDomain: 2}, nil, nil, nil, nil, nil, nil)
	ctx := context.Background()
	var held []func()
	for i := 0; i < 2; i++ {
		rel, err := r.domainSlot(ctx, "a.test")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, rel)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.domainSlot(cancelled, "a.test"); err == nil {
		t.Fatal("a third slot was granted with PerDomain 2")
	}
	other, err := r.domainSlot(ctx, "b.test")
	if err != nil {
		t.Fatalf("another destination is limited by a.test's slots: %v", err)
	}
	other()
	held[0]()
	rel, err := r.domainSlot(ctx, "a.test")
	if err != nil {
		t.Fatalf("no slot after one was released: %v", err)
	}
	rel()
	held[1]()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.domains) != 0 {
		t.Errorf("destinations still remembered with no user: %v", r.domains)
	}
}

func TestReplyParsers(t *testing.T) {
	for _, tc := range []struct {
		reply    string
		enhanced string
		code     int
		unknown  bool // a mailbox worth suppressing
	}{
		{"550 5.1.1 <x@remote.test>: user unknown", "5.1.1", 550, true},
		{"556 5.1.10 the domain does not accept mail", "5.1.10", 556, true},
		{"550 5.7.1 client [85.1.1.4] blocked", "5.7.1", 550, false},
		{"550 Requested action not taken: 5.1.1", "", 550, false},
		{"452 4.5.3 too many recipients", "4.5.3", 452, false},
		{"451 4.1.1 try later", "4.1.1", 451, false},
		{"250 2.0.0 Ok: queued as X", "2.0.0", 250, false},
		{"550-5.1.1 multi-line first line", "", 550, false},
		{"connection problem: EOF", "", 0, false},
		{"55", "", 0, false},
		{"999 9.9.9 nonsense", "", 0, false},
	} {
		t.Run(tc.reply, func(t *testing.T) {
			if got := enhancedCode(tc.reply); got != tc.enhanced {
				t.Errorf("enhancedCode = %q, want %q", got, tc.enhanced)
			}
			if got := replyCode(tc.reply); got != tc.code {
				t.Errorf("replyCode = %d, want %d", got, tc.code)
			}
			if got := isUnknownMailbox(tc.reply); got != tc.unknown {
				t.Errorf("isUnknownMailbox = %v, want %v", got, tc.unknown)
			}
		})
	}
}

var enhancedRE = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)

// FuzzReplyParsers: whatever a remote server sends, the parsers do not
// panic, an enhanced code is well formed and is the reply's second field,
// and a reply code is in 200..599.
func FuzzReplyParsers(f *testing.F) {
	for _, s := range []string{"550 5.1.1 user unknown", "452 4.5.3 x", "250 ok", "", "5", "550 5..1 x", "550 5.1.1000 x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, reply string) {
		if c := enhancedCode(reply); c != "" {
			if !enhancedRE.MatchString(c) || strings.Fields(reply)[1] != c {
				t.Errorf("enhancedCode(%q) = %q", reply, c)
			}
		}
		if n := replyCode(reply); n != 0 && (n < 200 || n > 599) {
			t.Errorf("replyCode(%q) = %d", reply, n)
		}
		isUnknownMailbox(reply)
		tooManyRecipients(outcome{code: 452, reply: reply})
	})
}

// The retry time a DSN names reads as people say it.
func TestSpan(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{5 * 24 * time.Hour, "5 days"},
		{24 * time.Hour, "1 day"},
		{36 * time.Hour, "36 hours"},
		{time.Hour, "1 hour"},
		{90 * time.Minute, "90 minutes"},
		{300 * time.Millisecond, "300ms"},
		{90 * time.Second, "1m30s"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := span(tc.d); got != tc.want {
				t.Errorf("span(%v) = %q, want %q", tc.d, got, tc.want)
			}
		})
	}
}
