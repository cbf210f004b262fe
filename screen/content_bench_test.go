package screen

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

// Screening cost with every local rule on (no block-list lookups): 5 KB
// text, and 1 MB with a PDF-like attachment.
func benchPipeline() *Pipeline {
	return &Pipeline{Log: quiet, Rules: []Rule{
		Headers{},
		&Repeats{Repeats: 1 << 30, Store: NewMemoryStore(StoreConfig{Window: 10 * time.Minute, Hold: time.Minute}), Log: quiet},
		&WebForm{Mode: "reject"},
		NewAttachments(DefaultBlockedExtensions),
		&Links{Log: quiet},
	}}
}

func benchScreen(b *testing.B, raw []byte) {
	p := benchPipeline()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		m := &Message{Login: "info@example.test", Rcpts: []string{"bob@remote.test"}, Raw: raw, OurHostname: "mx.sluice.test"}
		if v := p.Screen(context.Background(), m); v != nil {
			b.Fatal(v)
		}
	}
}

func BenchmarkScreen5KB(b *testing.B) {
	body := strings.Repeat("The quick brown fox jumps over the lazy dog at https://example.test/x\r\n", 70)
	benchScreen(b, []byte("From: info@example.test\r\nTo: bob@remote.test\r\nSubject: hi\r\n\r\n"+body))
}

func BenchmarkScreen1MBAttachment(b *testing.B) {
	data := make([]byte, 750<<10)
	rand.Read(data)
	copy(data, "%PDF-1.4")
	raw := []byte(strings.ReplaceAll(multipart("report.pdf", "application/pdf", data), "\n", "\r\n"))
	b.Logf("message size %d", len(raw))
	benchScreen(b, raw)
	_ = bytes.MinRead
}
