package rotlog

import (
	"fmt"
	"os"
)

// OntoStdio points the process's stdout and stderr at f: an OnOpen for a
// log that is also the process's own output, so what is written to the
// descriptors directly (Go's panic and fatal error reports, libraries that
// print to stderr) lands in the current file, and counts toward its size.
func OntoStdio(f *os.File) error {
	for _, fd := range []int{1, 2} {
		if err := dupOnto(int(f.Fd()), fd); err != nil {
			return fmt.Errorf("point descriptor %d at %s: %w", fd, f.Name(), err)
		}
	}
	return nil
}

// IsStderr reports whether the process's stderr is the file at path: a
// daemon launched with its output there takes the log over, one run by
// hand on a terminal keeps writing to the terminal.
func IsStderr(path string) bool {
	a, err := os.Stderr.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}
