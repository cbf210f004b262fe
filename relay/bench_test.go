package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"sluice/relay"
	"sluice/relay/dnstest"
	"sluice/relay/resolver"
	"sluice/relay/spool"
)

// BenchmarkDelivery delivers b.N messages of 5 KB, enqueued in the spool
// beforehand, with 100 workers to five destination domains served by one
// local sink that accepts everything (per_domain_connections keeps its
// default of 20, so 100 connections are in use):
//
//	go test -run '^$' -bench Delivery -benchtime 5000x ./relay
//
// Metrics: msgs/s (wall clock from Run to the last outcome), cpu-µs/msg
// (user+system CPU of the test process per message: the relay alone with
// smtp-sink, relay plus sink with the in-process go-smtp sink) and
// spool-µs/msg, the relay's per-message file bookkeeping measured apart
// (Read, LoadState, Remove of one queued message, single-threaded).
func BenchmarkDelivery(b *testing.B) {
	b.Run("go-smtp-sink", func(b *testing.B) {
		ip := "127.0.0.8"
		port, ls := listenShared(b, []string{ip})
		r := serveReceiver(b, "mx.bench.test", ls[0])
		r.discard = true
		benchDelivery(b, ip, port)
	})
	b.Run("postfix-smtp-sink", func(b *testing.B) {
		if !haveSmtpSink() {
			b.Skip("smtp-sink is not installed (apt-get install postfix)")
		}
		ip := "127.0.0.9"
		port := startSmtpSink(b, ip, b.TempDir())
		benchDelivery(b, ip, port)
	})
}

func haveSmtpSink() bool {
	if _, err := exec.LookPath("smtp-sink"); err == nil {
		return true
	}
	_, err := os.Stat("/usr/sbin/smtp-sink")
	return err == nil
}

const benchDomains = 5

func benchDelivery(b *testing.B, ip string, port int) {
	dns := dnstest.Start(b, "127.0.0.1:0")
	dns.Add(b, "mx.bench.test. 300 IN A "+ip)
	for d := 0; d < benchDomains; d++ {
		dns.Add(b, fmt.Sprintf("bench%d.test. 300 IN MX 10 mx.bench.test.", d))
	}
	sp, err := spool.Open(filepath.Join(b.TempDir(), "spool"))
	if err != nil {
		b.Fatal(err)
	}
	body := benchMessage(5 << 10)
	enqueue(b, sp, b.N, body)

	var delivered, other atomic.Int64
	done := make(chan struct{})
	rl := relay.New(relay.Config{
		Mode: "mx", MXPort: port, HELO: "sluice.test", Hostname: "sluice.test",
		Workers: 100, PerDomain: relay.DefaultConfig.PerDomain,
		Retry: []time.Duration{time.Second}, MaxAge: time.Hour,
		ConnectTimeout: 5 * time.Second, CommandTimeout: 30 * time.Second, IdleConnTimeout: 30 * time.Second,
	}, sp, resolver.New(dns.Addr), nil, nil, nil, slog.New(slog.DiscardHandler))
	rl.OnResult = func(_ *spool.Envelope, _, status, _ string, _ time.Duration) {
		if status != "delivered" {
			other.Add(1)
		}
		if delivered.Add(1) == int64(b.N) {
			close(done)
		}
	}
	sp.OnEnqueue = rl.Enqueued

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	go func() { rl.Run(ctx); close(stopped) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d messages delivered after 5 minutes", delivered.Load(), b.N)
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	cancel()
	<-stopped
	if n := other.Load(); n != 0 {
		b.Fatalf("%d outcomes were not \"delivered\"", n)
	}
	if ids, _ := sp.List(); len(ids) != 0 {
		b.Fatalf("%d messages left in the spool", len(ids))
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
	b.ReportMetric(spoolCost(b, sp, body, min(b.N, 2000)), "spool-µs/msg")
}

// benchMessage is a plain message of about size bytes.
func benchMessage(size int) []byte {
	var sb strings.Builder
	sb.WriteString("From: <alice@sender.test>\r\nTo: <bench@bench0.test>\r\nSubject: benchmark\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n")
	line := strings.Repeat("0123456789abcdef", 4) + "\r\n"
	for sb.Len() < size {
		sb.WriteString(line)
	}
	return []byte(sb.String())
}

// enqueue writes n messages concurrently (the spool's group commit shares
// the syncs, as concurrent submissions do).
func enqueue(b *testing.B, sp *spool.Spool, n int, body []byte) []string {
	ids := make([]string, n)
	var wg sync.WaitGroup
	var failed atomic.Value
	next := atomic.Int64{}
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				env := &spool.Envelope{ID: spool.NewID(), Login: "alice@sender.test", From: "alice@sender.test",
					To: []string{fmt.Sprintf("rcpt%d@bench%d.test", i, i%benchDomains)}, Received: time.Now()}
				if err := sp.Enqueue(env, body); err != nil {
					failed.Store(err)
					return
				}
				ids[i] = env.ID
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return ids
}

// spoolCost is the time per message of the relay's bookkeeping on the
// spool around one successful delivery: read the message, load its state,
// remove it.
func spoolCost(b *testing.B, sp *spool.Spool, body []byte, n int) float64 {
	ids := enqueue(b, sp, n, body)
	start := time.Now()
	for _, id := range ids {
		env, _, err := sp.Read(id)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := sp.LoadState(id, env); err != nil {
			b.Fatal(err)
		}
		if err := sp.Remove(id); err != nil {
			b.Fatal(err)
		}
	}
	return float64(time.Since(start).Microseconds()) / float64(n)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
