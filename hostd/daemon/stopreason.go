package daemon

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// panicMark is how Linux starts its last words.
var panicMark = []byte("Kernel panic - not syncing")

// explainStop says why a VM stopped by itself: a guest kernel panic when
// the console's tail shows one (the hypervisor only sees the guest go away).
func explainStop(err error, serialLog string) error {
	f, ferr := os.Open(serialLog)
	if ferr != nil {
		return err
	}
	defer f.Close()
	const tailSize = 64 << 10
	if st, serr := f.Stat(); serr == nil && st.Size() > tailSize {
		f.Seek(st.Size()-tailSize, io.SeekStart)
	}
	tail, _ := io.ReadAll(f)
	i := bytes.LastIndex(tail, panicMark)
	if i < 0 {
		return err
	}
	line, _, _ := bytes.Cut(tail[i:], []byte("\n"))
	return fmt.Errorf("the guest kernel panicked (%s); its console is in %s: %w", bytes.TrimSpace(line), serialLog, err)
}
