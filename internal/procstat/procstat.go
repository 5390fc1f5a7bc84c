// Package procstat reads what the current process holds (goroutines, open
// file descriptors, resident memory), so hostd and the agent can report
// it and tests can watch both for leaks under load.
package procstat

import (
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Stats is one reading.
type Stats struct {
	Goroutines int
	OpenFDs    int   // -1 where /proc (or /dev/fd) cannot be read
	RSSBytes   int64 // 0 where /proc cannot be read
}

// Self reads the current process.
func Self() Stats {
	s := Stats{Goroutines: runtime.NumGoroutine(), OpenFDs: -1}
	for _, dir := range []string{"/proc/self/fd", "/dev/fd"} {
		if entries, err := os.ReadDir(dir); err == nil {
			s.OpenFDs = len(entries) - 1 // the directory's own descriptor
			break
		}
	}
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			s.RSSBytes = pages * int64(os.Getpagesize())
		}
	}
	return s
}
