package hostd

import (
	"bytes"
	"fmt"

	"github.com/coworkhq/cowork/internal/termsafe"
)

// panicMark is how Linux starts its last words.
var panicMark = []byte("Kernel panic - not syncing")

// maxReason bounds the console line quoted in a stop reason.
const maxReason = 240

// explainStop says why a VM stopped by itself: a guest kernel panic when
// the console's tail (console.Tail) shows one (the hypervisor only sees
// the guest go away). The line is the guest's text: it is quoted inert
// (termsafe) and cut short, since it goes to status and its file.
func explainStop(err error, tail []byte, serialLog string) error {
	i := bytes.LastIndex(tail, panicMark)
	if i < 0 {
		return err
	}
	line, _, _ := bytes.Cut(tail[i:], []byte("\n"))
	return fmt.Errorf("the guest kernel panicked (%s); its console is in %s: %w", clip(termsafe.Line(string(bytes.TrimSpace(line))), maxReason), serialLog, err)
}
