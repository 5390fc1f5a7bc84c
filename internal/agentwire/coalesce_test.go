package agentwire

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// writeLog records each write it gets, as the emulator would see them.
type writeLog struct {
	mu     sync.Mutex
	writes [][]byte
	w      io.Writer // where the bytes go on to; nil: nowhere
}

func (l *writeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.writes = append(l.writes, append([]byte(nil), p...))
	l.mu.Unlock()
	if l.w != nil {
		return l.w.Write(p)
	}
	return len(p), nil
}

func (l *writeLog) Read([]byte) (int, error) { return 0, io.EOF }
func (l *writeLog) Close() error             { return nil }

func (l *writeLog) all() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]byte(nil), l.writes...)
}

func hdr(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[4:8], 1)
	binary.BigEndian.PutUint32(h[8:12], length)
	return h
}

// Each write frameConn passes on, and the bytes in order: a small data
// frame goes as one write, everything else as it came, and a held header
// is never lost or reordered when its body does not follow.
func TestFrameConnWrites(t *testing.T) {
	body := []byte("hello")
	big := make([]byte, mergeLimit+1)
	cases := []struct {
		name  string
		in    [][]byte
		wants [][]byte // the writes that reach the connection
	}{
		{"small data frame: one write",
			[][]byte{hdr(yamuxTypeData, 5), body},
			[][]byte{append(hdr(yamuxTypeData, 5), body...)}},
		{"window update: alone",
			[][]byte{hdr(1, 5), body},
			[][]byte{hdr(1, 5), body}},
		{"data header without a body (flags only): alone",
			[][]byte{hdr(yamuxTypeData, 0), hdr(1, 0)},
			[][]byte{hdr(yamuxTypeData, 0), hdr(1, 0)}},
		{"large body: header alone, body not copied",
			[][]byte{hdr(yamuxTypeData, uint32(len(big))), big},
			[][]byte{hdr(yamuxTypeData, uint32(len(big))), big}},
		{"a write that is not the announced body: header first, in order",
			[][]byte{hdr(yamuxTypeData, 5), []byte("hi"), hdr(1, 0)},
			[][]byte{hdr(yamuxTypeData, 5), []byte("hi"), hdr(1, 0)}},
		{"two frames back to back",
			[][]byte{hdr(yamuxTypeData, 5), body, hdr(yamuxTypeData, 2), []byte("ok")},
			[][]byte{append(hdr(yamuxTypeData, 5), body...), append(hdr(yamuxTypeData, 2), "ok"...)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var l writeLog
			fc := newFrameConn(&l)
			for _, p := range c.in {
				n, err := fc.Write(p)
				if err != nil || n != len(p) {
					t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
				}
			}
			got := l.all()
			if len(got) != len(c.wants) {
				t.Fatalf("%d writes reached the connection, want %d", len(got), len(c.wants))
			}
			for i := range got {
				if !bytes.Equal(got[i], c.wants[i]) {
					t.Errorf("write %d: %q, want %q", i, got[i], c.wants[i])
				}
			}
		})
	}
}

// Through real yamux sessions (the pinned version, both ends as hostd and
// the agent make them), a small message each way arrives whole and leaves
// each end as whole frames: one write per frame, never a header alone
// followed by its body.
func TestSessionsWriteWholeFrames(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	hostLog := &writeLog{w: hostEnd}
	guestLog := &writeLog{w: guestEnd}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	host, err := HostSession(struct {
		io.Reader
		io.Writer
		io.Closer
	}{hostEnd, hostLog, hostEnd}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	guest, err := GuestSession(struct {
		io.Reader
		io.Writer
		io.Closer
	}{guestEnd, guestLog, guestEnd}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer guest.Close()

	hs, err := host.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		s, err := guest.Accept()
		if err == nil {
			accepted <- s
		}
		close(accepted)
	}()
	if _, err := hs.Write([]byte("start")); err != nil {
		t.Fatal(err)
	}
	var gs net.Conn
	select {
	case gs = <-accepted:
	case <-time.After(time.Minute):
		t.Fatal("the guest end accepted no stream")
	}
	if gs == nil {
		t.Fatal("accept failed")
	}
	defer gs.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(gs, buf); err != nil || string(buf) != "start" {
		t.Fatalf("guest read %q, %v", buf, err)
	}
	if _, err := gs.Write([]byte("exit!")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(hs, buf); err != nil || string(buf) != "exit!" {
		t.Fatalf("host read %q, %v", buf, err)
	}

	for side, l := range map[string]*writeLog{"host": hostLog, "guest": guestLog} {
		data := 0
		for i, w := range l.all() {
			if len(w) < yamuxHeaderSize {
				t.Fatalf("%s write %d is %d bytes, less than a header", side, i, len(w))
			}
			n := int(binary.BigEndian.Uint32(w[8:12]))
			if w[1] != yamuxTypeData {
				n = 0
			}
			if len(w) != yamuxHeaderSize+n {
				t.Errorf("%s write %d: %d bytes for a frame of %d: not one whole frame", side, i, len(w), yamuxHeaderSize+n)
			}
			if n > 0 {
				data++
			}
		}
		if data != 1 {
			t.Errorf("%s: %d data frames written, want 1", side, data)
		}
	}
}
