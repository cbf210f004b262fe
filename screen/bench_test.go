package screen

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sluice/screen/redistest"
)

// BenchmarkQuotaRedis measures quota operations against a local Redis with
// 32 concurrent callers: each op is one Reserve (the RCPT check) or one
// Commit (the charge at acceptance), one round trip each. Logins are spread
// over 1,000 mailboxes; p99-us is the latency of one call.
func BenchmarkQuotaRedis(b *testing.B) {
	srv := redistest.Start(b)
	rdb, err := NewRedisClient(srv.URL(), time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer rdb.Close()
	benchStore(b, NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Minute}))
}

func BenchmarkQuotaMemory(b *testing.B) {
	benchStore(b, NewMemoryStore(StoreConfig{Window: time.Hour, Hold: time.Minute}))
}

func benchStore(b *testing.B, s QuotaStore) {
	const callers = 32
	var seq atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := b.N / callers
	if per == 0 {
		per = 1
	}
	for w := 0; w < callers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			ctx := context.Background()
			local := make([]time.Duration, 0, per)
			for i := 0; i < per; i += 2 {
				n := seq.Add(1)
				c := Charge{Tag: fmt.Sprint("d", n%100, ".test"), Txn: fmt.Sprint("t", n), ID: fmt.Sprint("m", n), N: 1,
					Scopes: []Scope{{Key: fmt.Sprint("login:u", n%1000), Limit: 1 << 30}}}
				t0 := time.Now()
				if _, err := s.Reserve(ctx, c); err != nil {
					b.Error(err)
					return
				}
				t1 := time.Now()
				if _, err := s.Commit(ctx, c); err != nil {
					b.Error(err)
					return
				}
				local = append(local, t1.Sub(t0), time.Since(t1))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		b.ReportMetric(float64(len(lat))/el.Seconds(), "ops/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
	}
}
