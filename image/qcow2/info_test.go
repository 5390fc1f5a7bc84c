package qcow2

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// validHeader is cluster 0 of a real overlay (header, extensions, name)
// that the hostile cases below take apart.
func validHeader(t testing.TB) []byte {
	t.Helper()
	return overlayBytes("/golden/disk.raw", FormatRaw, 8*clusterSize)[:clusterSize]
}

func writeTemp(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadInfoValidHeader(t *testing.T) {
	info, err := ReadInfo(writeTemp(t, validHeader(t)))
	if err != nil {
		t.Fatal(err)
	}
	want := Info{Size: 8 * clusterSize, Backing: "/golden/disk.raw", BackingFormat: "raw", ClusterBits: 16}
	if *info != want {
		t.Errorf("ReadInfo = %+v, want %+v", *info, want)
	}
}

func TestReadInfoHostile(t *testing.T) {
	be := binary.BigEndian
	nameOff := int(be.Uint64(validHeader(t)[8:]))
	cases := []struct {
		name string
		edit func(b []byte) []byte
		want string
	}{
		{"empty file", func(b []byte) []byte { return nil }, "shorter than a qcow2 header"},
		{"truncated in the v2 header", func(b []byte) []byte { return b[:50] }, "shorter than a qcow2 header"},
		{"truncated in the v3 header", func(b []byte) []byte { return b[:90] }, "shorter than a qcow2 v3 header"},
		{"truncated in the extensions", func(b []byte) []byte { return b[:headerLenV3+12] }, "past the end of the file"},
		{"truncated in the backing name", func(b []byte) []byte { return b[:nameOff+3] }, "past the end of the file"},
		{"wrong magic", func(b []byte) []byte { b[0] = 'X'; return b }, "not a qcow2 image"},
		{"version 1", func(b []byte) []byte { be.PutUint32(b[4:], 1); return b }, "version 1 is not supported"},
		{"version 4", func(b []byte) []byte { be.PutUint32(b[4:], 4); return b }, "version 4 is not supported"},
		{"cluster_bits 0", func(b []byte) []byte { be.PutUint32(b[20:], 0); return b }, "cluster_bits 0"},
		{"cluster_bits 30", func(b []byte) []byte { be.PutUint32(b[20:], 30); return b }, "cluster_bits 30"},
		{"size above int64", func(b []byte) []byte { be.PutUint64(b[24:], 1<<63); return b }, "too large"},
		{"header_length below 104", func(b []byte) []byte { be.PutUint32(b[100:], 96); return b }, "header_length 96"},
		{"header_length unaligned", func(b []byte) []byte { be.PutUint32(b[100:], 108); return b }, "header_length 108"},
		{"header_length past the cluster", func(b []byte) []byte { be.PutUint32(b[100:], 1<<20); return b }, "header_length 1048576"},
		{"refcount_order 7", func(b []byte) []byte { be.PutUint32(b[96:], 7); return b }, "refcount_order 7"},
		{"backing name beyond the file", func(b []byte) []byte { be.PutUint64(b[8:], 1<<40); return b }, "runs past the first cluster"},
		{"backing name offset wraps", func(b []byte) []byte { be.PutUint64(b[8:], 1<<64-8); return b }, "runs past the first cluster"},
		{"backing name in a short file", func(b []byte) []byte { be.PutUint64(b[8:], 4000); return b[:4001] }, "past the end of the file"},
		{"backing name overlaps the header", func(b []byte) []byte { be.PutUint64(b[8:], 16); return b }, "overlaps the 104-byte header"},
		{"backing name overlaps the extensions", func(b []byte) []byte { be.PutUint64(b[8:], headerLenV3+8); return b }, "past the end of its area at 112"},
		{"backing name length 100000", func(b []byte) []byte { be.PutUint32(b[16:], 100000); return b }, "100000 bytes, above the limit of 1023"},
		{"extension with huge length", func(b []byte) []byte { be.PutUint32(b[headerLenV3+4:], 0xffffffff); return b }, "4294967295 bytes, past the end"},
		{"extension length past the name", func(b []byte) []byte { be.PutUint32(b[headerLenV3+4:], 40); return b }, "past the end of its area"},
		{"backing format too long", func(b []byte) []byte {
			be.PutUint32(b[headerLenV3+4:], 17)
			be.PutUint64(b[8:], 1024) // room for it before the name
			return b
		}, "backing format name is 17 bytes"},
		{"backing format twice", func(b []byte) []byte {
			copy(b[headerLenV3+16:], b[headerLenV3:headerLenV3+16])
			be.PutUint64(b[8:], headerLenV3+40)
			return b
		}, "a second backing format"},
		{"extension loop without end", func(b []byte) []byte {
			be.PutUint64(b[8:], 0) // no backing name: extensions may fill the cluster
			for off := headerLenV3; off+8 <= len(b); off += 8 {
				be.PutUint32(b[off:], 0x1234) // unknown, empty, never the end
				be.PutUint32(b[off+4:], 0)
			}
			return b
		}, "more than 64 header extensions"},
		{"extensions run off the file", func(b []byte) []byte {
			be.PutUint64(b[8:], 0)
			be.PutUint32(b[headerLenV3+16:], 0x1234) // the end marker, overwritten
			be.PutUint32(b[headerLenV3+20:], 0)
			return b[:headerLenV3+24]
		}, "without an end marker"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeTemp(t, c.edit(validHeader(t)))
			info, err := ReadInfo(p)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ReadInfo = %+v, %v; want an error containing %q", info, err, c.want)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("the error %q does not name the file", err)
			}
			// Resize parses the same header and must refuse it too.
			if err := Resize(p, MaxSize); err == nil {
				t.Error("Resize accepted the hostile header")
			}
		})
	}
}

func TestReadInfoVersion2(t *testing.T) {
	// A v2 header: 72 bytes, extensions right after it.
	b := make([]byte, 4096)
	be := binary.BigEndian
	be.PutUint32(b[0:], qcowMagic)
	be.PutUint32(b[4:], 2)
	be.PutUint32(b[20:], 12)
	be.PutUint64(b[24:], 1<<20)
	be.PutUint32(b[72:], extBackingFormat)
	be.PutUint32(b[76:], 5)
	copy(b[80:], "qcow2")
	be.PutUint64(b[8:], 200)
	be.PutUint32(b[16:], 4)
	copy(b[200:], "base")
	p := writeTemp(t, b)
	info, err := ReadInfo(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Info{Size: 1 << 20, Backing: "base", BackingFormat: "qcow2", ClusterBits: 12}
	if *info != want {
		t.Errorf("ReadInfo = %+v, want %+v", *info, want)
	}
	if err := Resize(p, 2<<20); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("Resize of a v2 image = %v, want a refusal", err)
	}
}

// maxReadInfoAlloc bounds what one ReadInfo may allocate: at most one
// cluster of 2 MiB, plus small change.
const maxReadInfoAlloc = 3 << 20

// FuzzReadInfo: no input makes ReadInfo panic or allocate more than a
// cluster's worth, and what it accepts it reports within bounds.
func FuzzReadInfo(f *testing.F) {
	valid := validHeader(f)
	f.Add(valid)
	f.Add(valid[:headerLenV3+64])
	big := append([]byte(nil), valid...)
	binary.BigEndian.PutUint32(big[20:], maxClusterBits)
	f.Add(big)
	path := filepath.Join(f.TempDir(), "img")
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		info, err := ReadInfo(path)
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > maxReadInfoAlloc {
			t.Fatalf("ReadInfo allocated %d bytes on a %d-byte file", n, len(b))
		}
		if err != nil {
			return
		}
		if len(info.Backing) > maxBackingNameLen || len(info.BackingFormat) > maxBackingFormatSz ||
			info.Size < 0 || info.ClusterBits < minClusterBits || info.ClusterBits > maxClusterBits {
			t.Fatalf("ReadInfo accepted out-of-bounds values: %+v", info)
		}
	})
}
