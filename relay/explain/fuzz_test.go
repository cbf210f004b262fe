package explain

import (
	"strings"
	"testing"
)

func FuzzExplain(f *testing.F) {
	for _, c := range cases {
		f.Add(c.reply)
	}
	f.Add("550-5.7.1\n550-\n550 ")
	f.Add("said: 5")
	f.Add("\xff\xfe550 5.7.1 \x00")
	f.Add(strings.Repeat("550-5.7.1 x\n", 100))
	f.Fuzz(func(t *testing.T, reply string) {
		e := Explain(reply)
		if e.Category == "" {
			t.Fatalf("Explain(%q): empty category", reply)
		}
		if e.Meaning == "" || e.Action == "" {
			t.Fatalf("Explain(%q): empty meaning or action", reply)
		}
		if e.Code != 0 && (e.Code < 200 || e.Code > 599) {
			t.Fatalf("Explain(%q): code %d", reply, e.Code)
		}
		if e.Permanent && e.Code != 0 && e.Code < 500 {
			t.Fatalf("Explain(%q): permanent with code %d", reply, e.Code)
		}
		if e.Enhanced != "" && !strings.ContainsAny(e.Enhanced[:1], "245") {
			t.Fatalf("Explain(%q): enhanced %q", reply, e.Enhanced)
		}
		_ = e.String()
	})
}
