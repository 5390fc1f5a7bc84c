package procstat

import (
	"os"
	"testing"
)

func TestSelfSeesAnOpenFile(t *testing.T) {
	before := Self()
	if before.Goroutines < 1 || before.OpenFDs < 3 || before.RSSBytes < 1<<20 {
		t.Fatalf("implausible: %+v", before)
	}
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if after := Self(); after.OpenFDs != before.OpenFDs+1 {
		t.Errorf("open fds %d, then %d after opening one file", before.OpenFDs, after.OpenFDs)
	}
}
