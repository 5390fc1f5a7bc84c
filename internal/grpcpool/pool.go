// Package grpcpool is the buffer pool both ends of the agent channel give
// gRPC. gRPC's default pool jumps from 32 KiB to 1 MiB buffers and zeroes
// each one it hands out, so every 64 KiB output chunk cost a 1 MiB memclr;
// this pool has a class that fits a chunk and skips the zeroing (gRPC fills
// every byte it reads into a buffer before anyone sees it).
package grpcpool

import (
	"sync"

	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// classes are the buffer sizes kept; a request larger than the last one is
// allocated and left to the garbage collector.
var classes = []int{4 << 10, 16 << 10, 33 << 10, 65 << 10, 256 << 10, 1 << 20}

type pool struct{ pools []sync.Pool }

// InstallDefault makes this pool gRPC's default, which is the only way to
// reach the proto codec's buffers. The default is the whole process's and
// gRPC reads it without a lock, so main calls this once, before any gRPC
// (cowork-hostd, cowork-agent, bench): a library setting it in init() would
// decide for every program that imports it, and a constructor setting it
// later would race with gRPC already running (hostd's control server).
func InstallDefault() {
	experimental.SetDefaultBufferPool(newPool())
}

func newPool() mem.BufferPool {
	p := &pool{pools: make([]sync.Pool, len(classes))}
	for i, size := range classes {
		p.pools[i].New = func() any { b := make([]byte, size); return &b }
	}
	return p
}

func (p *pool) Get(n int) *[]byte {
	for i, size := range classes {
		if n <= size {
			b := p.pools[i].Get().(*[]byte)
			*b = (*b)[:n]
			return b
		}
	}
	b := make([]byte, n)
	return &b
}

func (p *pool) Put(b *[]byte) {
	c := cap(*b)
	for i, size := range classes {
		if c == size {
			*b = (*b)[:c]
			p.pools[i].Put(b)
			return
		}
	}
}
