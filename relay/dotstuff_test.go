package relay

import (
	"bufio"
	"bytes"
	"math/rand"
	"net/textproto"
	"testing"
)

// writeDotted writes exactly what textproto's DotWriter writes, for CRLF
// messages (the fast path) and for anything else.
func TestWriteDottedAsDotWriter(t *testing.T) {
	viaDotWriter := func(msg []byte) []byte {
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		dw := textproto.NewWriter(bw).DotWriter()
		dw.Write(msg)
		dw.Close()
		return out.Bytes()
	}
	viaWriteDotted := func(msg []byte) []byte {
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		if err := writeDotted(bw, msg); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	cases := []string{
		"", ".", "..", ".\r\n", "a", "a\r\n", "a\r\n.", "a\r\n.\r\n", ".a\r\n.b\r\n..c\r\n",
		"Subject: x\r\n\r\n.\r\n.\r\nend", "bare\nlf\n.dot\n", "bare\rcr.\r", "mixed\r\n.ok\n.bare\r\n",
		"\r\n", "\r\n.", "\n", "\r",
	}
	r := rand.New(rand.NewSource(1))
	alphabet := []byte{'a', '.', '\r', '\n'}
	for i := 0; i < 3000; i++ {
		b := make([]byte, r.Intn(40))
		for j := range b {
			b[j] = alphabet[r.Intn(len(alphabet))]
		}
		cases = append(cases, string(b))
		// The same as CRLF lines: the fast path.
		cases = append(cases, string(bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r"), nil), []byte("\n"), []byte("\r\n"))))
	}
	for _, c := range cases {
		if got, want := viaWriteDotted([]byte(c)), viaDotWriter([]byte(c)); !bytes.Equal(got, want) {
			t.Fatalf("%q: wrote %q, DotWriter writes %q", c, got, want)
		}
	}
}

func BenchmarkWriteDotted(b *testing.B) {
	msg := bytes.Repeat([]byte("Hello, this is a line of a message body of 5 KB.\r\n"), 100)
	msg = append(msg, ".a line with a leading dot\r\n"...)
	var out bytes.Buffer
	bw := bufio.NewWriterSize(&out, 64<<10)
	b.Run("writeDotted", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			out.Reset()
			writeDotted(bw, msg)
		}
	})
	b.Run("DotWriter", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			out.Reset()
			dw := textproto.NewWriter(bw).DotWriter()
			dw.Write(msg)
			dw.Close()
		}
	})
}
