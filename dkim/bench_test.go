package dkim

import (
	"bytes"
	"testing"
)

// 5 KB message, as on the accept path: trace prefix + client message.
var benchPrefix = []byte("Received: from client.test (127.0.0.1)\r\n\tby mx.sluice.test (Sluice) with ESMTPSA id 06H0VYZRYFDR10D5;\r\n\tTue, 24 Nov 2026 14:35:46 +0000\r\n")
var benchMsg = append([]byte("From: Info <info@example.test>\r\nTo: bob@remote.test\r\nSubject: benchmark\r\nDate: Tue, 24 Nov 2026 14:35:46 +0000\r\nMessage-ID: <b@example.test>\r\n\r\n"),
	bytes.Repeat([]byte("The quick brown fox jumps over the lazy dog, again and again.\r\n"), 78)...)

func benchSign(b *testing.B, algo string) {
	ring, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := ring.Generate("example.test", "s1", algo); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(benchPrefix) + len(benchMsg)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			sig, _, err := ring.Sign("example.test", "", benchPrefix, benchMsg)
			if err != nil || len(sig) == 0 {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkSignRSA(b *testing.B)     { benchSign(b, RSA) }
func BenchmarkSignEd25519(b *testing.B) { benchSign(b, Ed25519) }
func BenchmarkSignDual(b *testing.B)    { benchSign(b, "both") }
