package qcow2

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"
)

// A hostile image whose L1 entries all name one L2 table would have
// Written read that table once per entry: refused at the second.
func TestWrittenRefusesSharedL2Tables(t *testing.T) {
	overlay, _, _ := newOverlay(t, 8*clusterSize)
	f, err := os.OpenFile(overlay, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	l2 := int64(overlayClusters * clusterSize)
	if err := f.Truncate(l2 + clusterSize); err != nil {
		t.Fatal(err)
	}
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], uint64(l2))
	for i := int64(0); i < 2; i++ {
		f.WriteAt(e[:], l1TableOffset+8*i)
	}
	f.Close()
	if _, err := Written(overlay); err == nil || !strings.Contains(err.Error(), "two L1 entries") {
		t.Errorf("shared L2 tables: %v", err)
	}
}
