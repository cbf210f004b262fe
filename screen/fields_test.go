package screen

import (
	"bytes"
	"reflect"
	"runtime"
	"testing"
)

// TestSplitFields: the header section as the rules see it, fields
// unfolded (each continuation line joined with one space) and the offset
// of the body.
func TestSplitFields(t *testing.T) {
	cases := []struct {
		name, raw string
		want      []field
		body      string
	}{
		{"plain", "From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n",
			[]field{{"From", "a@example.test", 20}, {"Subject", "hi", 11}}, "body\r\n"},
		{"folded", "To: a@example.test,\r\n\tb@example.test,\r\n   c@example.test\r\nSubject:  x\r\n\r\n",
			[]field{{"To", "a@example.test, b@example.test, c@example.test", 19}, {"Subject", "x", 11}}, ""},
		{"two folded fields", "A: 1\r\n 2\r\nB: 3\r\n 4\r\n 5\r\n\r\nz",
			[]field{{"A", "1 2", 4}, {"B", "3 4 5", 4}}, "z"},
		{"junk line keeps the field open", "A: 1\r\njunk\r\n 2\r\n\r\n",
			[]field{{"A", "1 2", 4}}, ""},
		{"continuation before any field", " x\r\nA: 1\r\n\r\n",
			[]field{{"A", "1", 4}}, ""},
		{"no body", "A: 1\r\n 2",
			[]field{{"A", "1 2", 4}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs, off := splitFields([]byte(c.raw))
			if !reflect.DeepEqual(fs, c.want) {
				t.Errorf("fields %+v, want %+v", fs, c.want)
			}
			if got := c.raw[off:]; got != c.body {
				t.Errorf("body %q, want %q", got, c.body)
			}
		})
	}
}

// TestSplitFieldsLongFold: one field of 100,000 continuation lines (a 5 MB
// recipient list) is split with memory in proportion to its size. Joining
// each line onto the value so far copied the value each time: about 250
// GB for this size, and 40 s of CPU.
func TestSplitFieldsLongFold(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("To: a@example.test\r\n")
	for b.Len() < 5<<20 {
		b.WriteString(" b@example.test, c@example.test, d@example.test,\r\n")
	}
	b.WriteString("\r\nbody\r\n")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fs, off := splitFields(b.Bytes())
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 10*uint64(b.Len()) {
		t.Errorf("splitting a %d-byte folded field allocated %d bytes, want at most 10 times its size", b.Len(), alloc)
	}
	if len(fs) != 1 || string(b.Bytes()[off:]) != "body\r\n" {
		t.Fatalf("%d fields, body %q", len(fs), b.Bytes()[off:])
	}
}
