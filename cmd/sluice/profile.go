package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
)

// startProfiles writes Go profiles of a serve run for performance work
// (bench/README.md): SLUICE_CPUPROFILE=FILE records CPU from the start,
// SLUICE_MEMPROFILE=FILE writes the allocations when the server stops.
// The returned function finishes them.
func startProfiles(log *slog.Logger) (func(), error) {
	var done []func()
	if path := os.Getenv("SLUICE_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return nil, fmt.Errorf("SLUICE_CPUPROFILE: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("SLUICE_CPUPROFILE: %w", err)
		}
		log.Info("writing a CPU profile until the server stops", "file", path)
		done = append(done, func() { pprof.StopCPUProfile(); f.Close() })
	}
	if path := os.Getenv("SLUICE_MEMPROFILE"); path != "" {
		runtime.MemProfileRate = 64 << 10
		done = append(done, func() {
			f, err := os.Create(path)
			if err != nil {
				log.Error("SLUICE_MEMPROFILE not written", "err", err)
				return
			}
			defer f.Close()
			pprof.Lookup("allocs").WriteTo(f, 0)
		})
	}
	return func() {
		for _, d := range done {
			d()
		}
	}, nil
}
