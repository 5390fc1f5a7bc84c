// Package egresslogtest runs the log port of an egress pod in a test:
// an egresslog.Server on a loopback port, with an audit log of its own.
package egresslogtest

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"github.com/coworkhq/cowork/hostd/egresslog"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// Start serves a fresh audit log on a loopback port until the test
// ends; it returns the port's address and the log, to write to.
func Start(t testing.TB) (addr string, log *audit.Log) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "network.jsonl")
	al, err := audit.Open(path, audit.Options{Key: filepath.Join(dir, "audit.key"), Head: filepath.Join(dir, "audit.head")})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); (&egresslog.Server{Path: path}).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		<-done
		al.Close()
	})
	return l.Addr().String(), al
}
