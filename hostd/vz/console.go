package vz

import (
	"fmt"
	"os"
)

// consoleFiles are the VM's own ends of its serial console. vz's
// file-handle serial attachment wraps bare descriptors (NSFileHandle
// initWithFileDescriptor, which neither copies nor owns them), so, as
// for the NIC, the VM keeps a duplicate of the pipe hostd drains (out),
// while hostd closes its own. The console's input (in) is the read end of
// a pipe whose write end (idle) is held and never written: vz needs a
// handle to read, and one at EOF, like /dev/null's, would have
// NSFileHandle's readability handler called again and again.
type consoleFiles struct{ in, out, idle *os.File }

// ownConsole makes the VM's console files from hostd's console pipe.
func ownConsole(console *os.File) (*consoleFiles, error) {
	out, err := dupFile(console, "console")
	if err != nil {
		return nil, err
	}
	in, idle, err := os.Pipe()
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("console input pipe: %w", err)
	}
	return &consoleFiles{in: in, out: out, idle: idle}, nil
}

// Close closes the VM's console files: the guest's console is gone, and
// hostd's drain of it ends once no one else holds the pipe.
func (c *consoleFiles) Close() {
	if c == nil {
		return
	}
	for _, f := range []*os.File{c.in, c.out, c.idle} {
		f.Close()
	}
}
