package agentclient

import (
	"errors"
	"fmt"

	"github.com/coworkhq/cowork/internal/execwire"
	"github.com/coworkhq/cowork/internal/termsafe"
)

var errClosed = errors.New("the agent client is closed")

// ExecError is the agent's refusal to start a process: its Kind (an
// execwire.Kind*) and its message, worded for the person who asked.
type ExecError struct {
	Kind string
	Msg  string
}

func (e *ExecError) Error() string { return e.Msg }

// newExecError takes the agent's words as untrusted: one printable line,
// bounded by the exit frame's size.
func newExecError(m *execwire.ExitMsg) *ExecError {
	return &ExecError{Kind: termsafe.Line(m.Kind), Msg: termsafe.Line(m.Error)}
}

// ProtocolError is an agent that broke the exec protocol: a frame of an
// unknown type, too long for its type, out of order, or a stream that
// ended inside a frame. The guest is hostile or runs another agent; the
// exec's connection is closed (and with it the process hung up on).
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string {
	return "the guest agent broke the exec protocol (" + e.Msg + "); restart the instance so that it runs this cowork's agent"
}

func protocolErr(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// LostError is a connection to the agent that broke while a process ran:
// the agent exited or restarted, or the VM stopped.
type LostError struct{ err error }

func (e *LostError) Error() string {
	return "lost the connection to the guest agent while the command ran (the agent restarted, or the VM stopped): " + e.err.Error()
}

func (e *LostError) Unwrap() error { return e.err }

// IsNotFound reports whether err says the program to run does not exist.
func IsNotFound(err error) bool {
	var e *ExecError
	return errors.As(err, &e) && e.Kind == execwire.KindNotFound
}

// Message is err's text without decoration: the agent's own words for a
// refused start.
func Message(err error) string {
	var e *ExecError
	if errors.As(err, &e) {
		return e.Msg
	}
	return err.Error()
}
