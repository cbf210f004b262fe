package dkim

import (
	"reflect"
	"testing"
)

// TestSignedKeysMarkFields: the screen's X-Spam fields are signed once per
// instance when the header has them, never when only the body mentions
// them, and never oversigned.
func TestSignedKeysMarkFields(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parts []string
		extra []string
	}{
		{"none", []string{"Received: x\r\n", "From: a@b.test\r\n\r\nX-Spam: Yes\r\n"}, nil},
		{"in the prefix", []string{"Received: x\r\nX-Spam: Yes\r\nX-Spam-Score: 6.00\r\n", "From: a@b.test\r\n\r\nbody\r\n"}, []string{"X-Spam", "X-Spam-Score"}},
		{"client's own too", []string{"X-Spam: Yes\r\n", "x-spam : No\r\nSubject: s\r\n folded X-Spam: no\r\n\r\n"}, []string{"X-Spam", "X-Spam"}},
		{"body only", []string{"", "From: a@b.test\r\n\r\nX-Spam-Score: 1\r\n"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var parts [][]byte
			for _, p := range tc.parts {
				parts = append(parts, []byte(p))
			}
			got := signedKeys(parts)[len(headerKeys):]
			if len(got) == 0 {
				got = nil
			}
			if !reflect.DeepEqual(got, tc.extra) {
				t.Fatalf("extra signed fields %q, want %q", got, tc.extra)
			}
		})
	}
}
