package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"syscall"
)

// memProfileEnv names a directory: when it is set, each SIGUSR1 makes
// hostd write a heap profile (after a GC) and its runtime/metrics there,
// as heap-N.pprof and metrics-N.txt. It is how hostd's idle memory is
// measured (issue 17); without it SIGUSR1 keeps its default.
const memProfileEnv = "COWORK_HOSTD_MEMPROFILE"

// watchMemProfile starts the SIGUSR1 handler when memProfileEnv is set.
func watchMemProfile(stderr io.Writer) {
	dir := os.Getenv(memProfileEnv)
	if dir == "" {
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		for n := 1; ; n++ {
			<-sig
			if err := writeMemProfile(dir, n); err != nil {
				fmt.Fprintln(stderr, "cowork-hostd: memory profile:", err)
			}
		}
	}()
}

// writeMemProfile writes the nth heap profile and metrics dump into dir.
func writeMemProfile(dir string, n int) error {
	runtime.GC()
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("heap-%d.pprof", n)))
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, fmt.Sprintf("metrics-%d.txt", n)), []byte(metricsText()), 0o600)
}

// metricsText is every runtime/metrics value that is a plain number, one
// "name value" a line.
func metricsText() string {
	descs := metrics.All()
	samples := make([]metrics.Sample, len(descs))
	for i := range descs {
		samples[i].Name = descs[i].Name
	}
	metrics.Read(samples)
	var b strings.Builder
	for _, s := range samples {
		switch s.Value.Kind() {
		case metrics.KindUint64:
			fmt.Fprintf(&b, "%s %d\n", s.Name, s.Value.Uint64())
		case metrics.KindFloat64:
			fmt.Fprintf(&b, "%s %g\n", s.Name, s.Value.Float64())
		}
	}
	return b.String()
}
