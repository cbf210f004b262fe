package spool

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkSegmentSync measures one journal group (8 records of 5.2 KB,
// written with pwritev, then fdatasync) into a new file, which grows at
// every group, and into a spare written over, which does not: run it on
// the file system of the data_dir (TMPDIR=...).
//
//	go test -run '^$' -bench SegmentSync -benchtime 2000x ./relay/spool
func BenchmarkSegmentSync(b *testing.B) {
	group := make([][]byte, 8)
	for i := range group {
		group[i] = make([]byte, 5200)
		for j := range group[i] {
			group[i][j] = byte(i + j)
		}
	}
	size := int64(8 * 5200)
	for _, tc := range []struct {
		name  string
		spare bool
	}{{"new-file", false}, {"spare", true}} {
		b.Run(tc.name, func(b *testing.B) {
			f, err := os.OpenFile(filepath.Join(b.TempDir(), "seg.wal"), os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if tc.spare {
				// A segment that was written once before, to its full size.
				zero := make([]byte, 1<<20)
				for off := int64(0); off < size*int64(b.N); off += int64(len(zero)) {
					if _, err := f.WriteAt(zero, off); err != nil {
						b.Fatal(err)
					}
				}
				if err := unix.Fsync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := pwritev(f, group, size*int64(i)); err != nil {
					b.Fatal(err)
				}
				if err := unix.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
