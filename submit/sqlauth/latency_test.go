package sqlauth

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"sluice/submit/sqlauth/sqltest"
	"sluice/submit/userdb"
)

// TestAuthLatency measures Authenticate against a real PostgreSQL with 50
// concurrent logins, cold (each login a cache miss) and cached, next to
// the cost of the password hash alone. It is a measurement, not a check:
// run it with
//
//	SLUICE_AUTH_BENCH=1 go test -count=1 -run TestAuthLatency -v ./submit/sqlauth
func TestAuthLatency(t *testing.T) {
	if os.Getenv("SLUICE_AUTH_BENCH") != "1" {
		t.Skip("a measurement: set SLUICE_AUTH_BENCH=1 to run it")
	}
	const (
		workers = 50
		logins  = 1000
		rounds  = 5 // cached passes over all logins
	)
	db := sqltest.StartPostgres(t)
	db.CreateSchema()
	for _, scheme := range []string{"bcrypt", "SHA512-CRYPT"} {
		t.Run(scheme, func(t *testing.T) {
			const pw = "bench password 1"
			hash := sqltest.Hash(t, scheme, pw)
			db.Exec("DELETE FROM mailbox")
			db.Exec(`INSERT INTO mailbox (username, password, active, hourly_quota)
				SELECT 'u' || i || '@bench.test', $1, true, 100 FROM generate_series(1, $2::int) AS i`, hash, logins)
			db.Exec(`INSERT INTO sender_grant (username, address) SELECT username, 'alias-' || username FROM mailbox`)

			var hashOnly []time.Duration
			for i := 0; i < 30; i++ {
				start := time.Now()
				if ok, err := userdb.CheckPassword(hash, pw); !ok || err != nil {
					t.Fatal(ok, err)
				}
				hashOnly = append(hashOnly, time.Since(start))
			}

			// One login at a time: what a miss costs beyond the hash.
			single := openBackend(t, db, db.OneQuery(), 0)
			var alone []time.Duration
			for i := 1; i <= 50; i++ {
				start := time.Now()
				if _, err := single.Authenticate(context.Background(), fmt.Sprintf("u%d@bench.test", i), pw); err != nil {
					t.Fatal(err)
				}
				alone = append(alone, time.Since(start))
			}

			b := openBackend(t, db, db.OneQuery(), time.Hour)
			run := func(passes int) []time.Duration {
				var mu sync.Mutex
				var all []time.Duration
				var wg sync.WaitGroup
				jobs := make(chan string)
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var mine []time.Duration
						for login := range jobs {
							start := time.Now()
							if _, err := b.Authenticate(context.Background(), login, pw); err != nil {
								t.Error(err)
							}
							mine = append(mine, time.Since(start))
						}
						mu.Lock()
						all = append(all, mine...)
						mu.Unlock()
					}()
				}
				for p := 0; p < passes; p++ {
					for i := 1; i <= logins; i++ {
						jobs <- fmt.Sprintf("u%d@bench.test", i)
					}
				}
				close(jobs)
				wg.Wait()
				return all
			}
			stmts := db.Statements(sqltest.MarkOne)
			q0 := b.Queries()
			start := time.Now()
			cold := run(1)
			coldWall := time.Since(start)
			perMiss := float64(db.Statements(sqltest.MarkOne)-stmts) / logins
			q1 := b.Queries()
			start = time.Now()
			cached := run(rounds)
			cachedWall := time.Since(start)
			if b.Queries() != q1 {
				t.Errorf("cached pass sent %d queries", b.Queries()-q1)
			}
			fmt.Printf("sqlauth %s, %d concurrent, PostgreSQL on loopback:\n", scheme, workers)
			fmt.Printf("  hash alone (sequential):  p50 %v  p99 %v\n", pct(hashOnly, 50), pct(hashOnly, 99))
			fmt.Printf("  cold, one at a time:      p50 %v  p99 %v\n", pct(alone, 50), pct(alone, 99))
			fmt.Printf("  cold   (%4d misses):     p50 %v  p99 %v  (%.0f logins/s; %.2f queries per miss, backend counted %d)\n",
				len(cold), pct(cold, 50), pct(cold, 99), float64(len(cold))/coldWall.Seconds(), perMiss, q1-q0)
			fmt.Printf("  cached (%4d hits):       p50 %v  p99 %v  (%.0f logins/s)\n",
				len(cached), pct(cached, 50), pct(cached, 99), float64(len(cached))/cachedWall.Seconds())
		})
	}
}

// pct is the p-th percentile of ds.
func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i].Round(time.Microsecond)
}
