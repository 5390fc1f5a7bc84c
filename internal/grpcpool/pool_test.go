package grpcpool

import (
	"testing"

	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// A request gets a buffer of its length from the smallest class it fits,
// so a 64 KiB output chunk costs a 65 KiB buffer, not gRPC's 1 MiB one.
func TestGetPicksTheSmallestClassThatFits(t *testing.T) {
	p := newPool()
	for _, c := range []struct{ n, cap int }{
		{1, 4 << 10}, {4 << 10, 4 << 10}, {4<<10 + 1, 16 << 10},
		{64 << 10, 65 << 10}, {1 << 20, 1 << 20}, {1<<20 + 1, 1<<20 + 1},
	} {
		b := p.Get(c.n)
		if len(*b) != c.n || cap(*b) != c.cap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", c.n, len(*b), cap(*b), c.n, c.cap)
		}
		p.Put(b)
	}
}

// A buffer put back is whole again for its next user, and one of no
// class's size (grown elsewhere, or over the largest) is left to the
// collector instead of joining a class it does not fit.
func TestPutKeepsOnlyWholeClassBuffers(t *testing.T) {
	p := newPool()
	b := p.Get(100)
	p.Put(b)
	if got := p.Get(4 << 10); cap(*got) != 4<<10 || len(*got) != 4<<10 {
		t.Fatalf("after a Put: len %d cap %d", len(*got), cap(*got))
	}
	odd := make([]byte, 5000)
	p.Put(&odd)
	for range 100 {
		if got := p.Get(16 << 10); cap(*got) != 16<<10 {
			t.Fatalf("a %d-byte buffer came out of the 16 KiB class", cap(*got))
		}
	}
}

// InstallDefault is what main calls: gRPC's codec then draws from this
// pool.
func TestInstallDefaultSetsGRPCsPool(t *testing.T) {
	old := mem.DefaultBufferPool()
	t.Cleanup(func() { experimental.SetDefaultBufferPool(old) })
	InstallDefault()
	if _, ok := mem.DefaultBufferPool().(*pool); !ok {
		t.Fatalf("gRPC's default pool is %T", mem.DefaultBufferPool())
	}
}
