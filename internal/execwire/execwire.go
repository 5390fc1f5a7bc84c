// Package execwire is the exec protocol between hostd's side (agentclient)
// and the guest agent: small typed frames on a connection of its own,
// opened with Preface. It replaced a gRPC stream so that the CLI links
// neither gRPC nor protobuf, and so that an exec costs one write each way
// instead of HTTP/2's headers, window updates and trailers.
//
// A frame is a 5-byte header, the type and the payload's length (big
// endian uint32), then the payload:
//
//	host → guest: Start (JSON StartMsg), Stdin (bytes), CloseStdin, Signal
//	              (uint32), Resize (uint32 rows, uint32 cols)
//	guest → host: Started (uint32 pid), Stdout, Stderr (bytes), Exit (JSON
//	              ExitMsg)
//
// An exec is Start, answered by Started then any output and one Exit, or
// by an Exit whose Error says why nothing ran. After the Exit the
// connection serves the next Start; frames of a finished exec that were
// already on their way are dropped by the agent. Closing the connection
// while a process runs hangs it up (the agent kills its session).
//
// Both ends import this package, which imports only the standard library,
// so that the two binaries built from one commit agree by construction.
// Neither end trusts the other's lengths: Reader refuses a frame longer
// than the limit its caller gives for that type before reading it.
package execwire

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// Preface opens an exec connection. It is as long as
// agentwire.SourcePreface, so that the agent's listener tells the kinds of
// channel apart by reading one fixed-size head.
const Preface = "cowork-exec/1\n"

// Type is a frame's type.
type Type byte

// Frames the host sends.
const (
	Start      Type = 1
	Stdin      Type = 2
	CloseStdin Type = 3
	Signal     Type = 4
	Resize     Type = 5
)

// Frames the agent sends.
const (
	Started Type = 16
	Stdout  Type = 17
	Stderr  Type = 18
	Exit    Type = 19
)

func (t Type) String() string {
	switch t {
	case Start:
		return "start"
	case Stdin:
		return "stdin"
	case CloseStdin:
		return "close-stdin"
	case Signal:
		return "signal"
	case Resize:
		return "resize"
	case Started:
		return "started"
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	case Exit:
		return "exit"
	}
	return fmt.Sprintf("type %d", byte(t))
}

// HeaderSize is the length of a frame's header.
const HeaderSize = 5

// Limits on payloads. The host never sends more stdin in one frame than
// MaxStdin, nor the agent more output than MaxOutput; each end refuses
// larger frames of the other.
const (
	MaxStart   = 1 << 20   // argv and env of one exec
	MaxStdin   = 64 << 10  // one stdin frame
	MaxOutput  = 256 << 10 // one stdout or stderr frame
	MaxExit    = 16 << 10  // an exit, its error message included
	MaxControl = 8         // signal, resize, started
)

// Error kinds an Exit carries when the process could not be started.
const (
	KindInvalid    = "invalid_argument"  // a bad request: its message says what
	KindNotFound   = "not_found"         // the program does not exist or cannot run
	KindPermission = "permission_denied" // the agent may not run as that user
	KindFailed     = "failed"            // the start itself failed
	KindTooLarge   = "too_large"         // a frame over the agent's limit
	KindProtocol   = "protocol"          // frames out of order
)

// TerminalSize is a terminal's size in character cells.
type TerminalSize struct {
	Rows uint32 `json:"rows"`
	Cols uint32 `json:"cols"`
}

// StartMsg is a Start frame's payload: the process to run.
type StartMsg struct {
	// Argv is the program and its arguments; argv[0] is looked up in the
	// PATH of the process's environment when it has no slash.
	Argv []string `json:"argv"`
	// Env holds KEY=VALUE entries laid over the default environment.
	Env []string `json:"env,omitempty"`
	// Cwd is the working directory; the user's home when empty.
	Cwd string `json:"cwd,omitempty"`
	// User is a name or numeric uid; the agent's default user when empty.
	User string `json:"user,omitempty"`
	// TTY, when set, runs the process on a new pseudo-terminal of this
	// size; its output then arrives as stdout only.
	TTY *TerminalSize `json:"tty,omitempty"`
	// NoStdin gives the process /dev/null for input (without a TTY):
	// the client has no input, and stdin frames are dropped.
	NoStdin bool `json:"no_stdin,omitempty"`
	// EndSession ends, once the process exits, whatever it left running:
	// the processes of its session and those that carry its marker in
	// their environment (COWORK_EXEC, which a descendant that made a
	// session of its own still has), SIGHUP then SIGKILL after the grace
	// period. Without it they run on after a process that exited by
	// itself (a server started in the background).
	EndSession bool `json:"end_session,omitempty"`
	// ExecID names the exec: the agent gives its processes COWORK_EXEC=ID,
	// which the audit log's owners of their flows carry (hostd asks the
	// agent who opened each flow), so that the host can tell the network
	// use of one exec from another's. ExecIDLen lowercase hex digits; the
	// agent picks one when it is empty.
	ExecID string `json:"exec_id,omitempty"`
}

// ExecIDLen is the length of StartMsg.ExecID.
const ExecIDLen = 16

// ValidExecID says whether id is ExecIDLen lowercase hex digits.
func ValidExecID(id string) bool {
	if len(id) != ExecIDLen {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ExitMsg is an Exit frame's payload.
type ExitMsg struct {
	// Code is the exit status as a shell reports it: the process's code,
	// or 128+N when signal N killed it.
	Code int `json:"code"`
	// Signal names the signal that killed the process (e.g. "SIGKILL").
	Signal string `json:"signal,omitempty"`
	// Error, with Kind, says why the process did not start; it is set
	// only on an Exit that answers Start instead of Started.
	Error string `json:"error,omitempty"`
	Kind  string `json:"kind,omitempty"`
}

// AppendHeader appends a frame header for a payload of n bytes to b.
func AppendHeader(b []byte, t Type, n int) []byte {
	return binary.BigEndian.AppendUint32(append(b, byte(t)), uint32(n))
}

// PutHeader writes a frame header into b[:HeaderSize].
func PutHeader(b []byte, t Type, n int) {
	b[0] = byte(t)
	binary.BigEndian.PutUint32(b[1:HeaderSize], uint32(n))
}

// AppendFrame appends a whole frame to b.
func AppendFrame(b []byte, t Type, payload []byte) []byte {
	return append(AppendHeader(b, t, len(payload)), payload...)
}

// AppendJSON appends a frame whose payload is v as JSON.
func AppendJSON(b []byte, t Type, v any) ([]byte, error) {
	p, err := json.Marshal(v)
	if err != nil {
		return b, err
	}
	return AppendFrame(b, t, p), nil
}

// AppendUint32s appends a frame whose payload is vs, big endian.
func AppendUint32s(b []byte, t Type, vs ...uint32) []byte {
	b = AppendHeader(b, t, 4*len(vs))
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

// Uint32s decodes a payload of n big-endian uint32s.
func Uint32s(p []byte, n int) ([]uint32, error) {
	if len(p) != 4*n {
		return nil, fmt.Errorf("payload of %d bytes, want %d", len(p), 4*n)
	}
	vs := make([]uint32, n)
	for i := range vs {
		vs[i] = binary.BigEndian.Uint32(p[4*i:])
	}
	return vs, nil
}

// Limits says which frame types a reader accepts, and the most payload
// each may carry. The zero value accepts nothing.
type Limits struct {
	ok  [256]bool
	max [256]int
}

// Allow accepts frames of type t with up to max bytes of payload.
func (l *Limits) Allow(t Type, max int) *Limits {
	l.ok[t], l.max[t] = true, max
	return l
}

// Reader reads frames, bounding each before it reads the payload.
type Reader struct {
	r      io.Reader
	limits *Limits
	head   [HeaderSize]byte
}

// NewReader returns a Reader of r that accepts what limits allows. r
// should be buffered: a header is read with its own Read.
func NewReader(r io.Reader, limits *Limits) *Reader {
	return &Reader{r: r, limits: limits}
}

// FrameError is a frame the reader refused: of an unknown type, or longer
// than its type allows. The stream cannot be read past it.
type FrameError struct {
	Type Type
	Len  uint32
	Max  int // -1: the type is not accepted at all
}

func (e *FrameError) Error() string {
	if e.Max < 0 {
		return fmt.Sprintf("unexpected frame of %s (%d bytes)", e.Type, e.Len)
	}
	return fmt.Sprintf("%s frame of %d bytes is over the limit of %d", e.Type, e.Len, e.Max)
}

// Next reads the next frame's header and checks it against the limits.
// The caller then reads exactly the returned length with Payload or
// ReadPayload. A stream that ends between frames is io.EOF; one that
// ends inside a header is io.ErrUnexpectedEOF.
func (r *Reader) Next() (Type, int, error) {
	if _, err := io.ReadFull(r.r, r.head[:]); err != nil {
		return 0, 0, err
	}
	t := Type(r.head[0])
	n := binary.BigEndian.Uint32(r.head[1:])
	if !r.limits.ok[t] {
		return t, 0, &FrameError{Type: t, Len: n, Max: -1}
	}
	if max := r.limits.max[t]; uint64(n) > uint64(max) {
		return t, 0, &FrameError{Type: t, Len: n, Max: max}
	}
	return t, int(n), nil
}

// ReadPayload reads the n-byte payload Next announced into buf, which
// must hold it; a stream that ends first is io.ErrUnexpectedEOF.
func (r *Reader) ReadPayload(buf []byte, n int) ([]byte, error) {
	p := buf[:n]
	if _, err := io.ReadFull(r.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return p, nil
}
