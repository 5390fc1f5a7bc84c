// Package sshagent lends the guest the host's SSH agent (cowork's
// --ssh-agent): each connection the guest makes to it is served here, on
// the host, against a connection of its own to the agent at SSH_AUTH_SOCK.
// The keys never leave the host: the guest may list them and ask for
// signatures, each of which is audited; it may not add, remove or lock
// keys, nor take them out. The guest's session bindings
// (session-bind@openssh.com) are passed to the host's agent: a key held
// with a destination constraint (`ssh-add -h github.com`) signs only for
// the servers it names. The host's agent takes the guest for this machine
// itself, not for a forwarding hop: a key limited to github.com signs for
// github.com from the guest as from here.
package sshagent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/time/rate"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// KindSign is an audit record of a signature the guest asked for.
const KindSign = "ssh-sign"

// maxMessage bounds a request from the guest: a signing request carries a
// userauth request or a hash, a few KiB at most. (The agent protocol
// allows 16 MiB, which a guest would make hostd allocate per connection.)
const maxMessage = 256 << 10

// Signing is rate-limited per instance: a guest asking in a loop would
// fill the audit log and keep the host's agent busy (or prompt its user
// again and again, for keys added with ssh-add -c). The refusals'
// records are rate-limited too; those not written are counted on the
// next one.
const (
	signsPerSecond = 10
	signBurst      = 20
	deniedPerSec   = 1
	deniedBurst    = 5
)

// maxConns bounds the guest's connections served at once (each holds one
// to the host's agent, which has a descriptor limit of its own and serves
// this machine's ssh too), and idle how long one may wait between
// requests.
const (
	maxConns = 16
	idle     = 5 * time.Minute
)

// sessionBind is OpenSSH's extension by which a client tells the agent
// which server a session is with.
const sessionBind = "session-bind@openssh.com"

// Lender serves the guest's agent connections for one instance.
type Lender struct {
	// Socket is the host agent's socket (SSH_AUTH_SOCK).
	Socket string
	// Record writes an audit record.
	Record func(*audit.Record)
	// Down, when set, says why signatures are refused: while the audit
	// log cannot be written, none is made off the record ("" lets them).
	Down func() string

	once       sync.Once
	limit      *rate.Limiter // signatures
	denied     *rate.Limiter // records of refused ones
	suppressed atomic.Int64  // refusals not recorded since the last one
	conns      chan struct{} // a place per connection served
}

func (l *Lender) init() {
	l.once.Do(func() {
		l.limit = rate.NewLimiter(signsPerSecond, signBurst)
		l.denied = rate.NewLimiter(deniedPerSec, deniedBurst)
		l.conns = make(chan struct{}, maxConns)
	})
}

// recordDenied writes a refusal's record unless too many came lately;
// the next one written counts those that were not.
func (l *Lender) recordDenied(rec *audit.Record) {
	if !l.denied.Allow() {
		l.suppressed.Add(1)
		return
	}
	rec.Suppressed = l.suppressed.Swap(0)
	l.Record(rec)
}

// ErrNoAgent is Serve without a host agent to lend.
var ErrNoAgent = errors.New("no SSH agent on the host (SSH_AUTH_SOCK is not set)")

// ErrBusy is Serve of a connection past maxConns.
var ErrBusy = fmt.Errorf("the guest has %d connections to the SSH agent open already", maxConns)

// Serve serves one guest connection until it closes, is idle for too
// long, or sends what it may not; the caller closes it.
func (l *Lender) Serve(guest net.Conn) error {
	l.init()
	if l.Socket == "" {
		return ErrNoAgent
	}
	select {
	case l.conns <- struct{}{}:
		defer func() { <-l.conns }()
	default:
		return ErrBusy
	}
	a := &lent{l: l}
	defer a.close()
	return agent.ServeAgent(a, &bounded{ReadWriter: guest, conn: guest})
}

// lent is the agent the guest sees, on one connection; it dials the
// host's agent at its first request.
type lent struct {
	l    *Lender
	conn net.Conn
	up   agent.ExtendedAgent
	// bound is the host key of the server the guest last bound the
	// session to (session-bind, accepted by the host's agent), for the
	// audit: the guest's claim, checked by that agent.
	bound string
}

// upstream is the connection to the host's agent.
func (a *lent) upstream() (agent.ExtendedAgent, error) {
	if a.up != nil {
		return a.up, nil
	}
	c, err := net.DialTimeout("unix", a.l.Socket, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("cowork: the host's SSH agent: %w", err)
	}
	a.conn, a.up = c, agent.NewClient(c)
	return a.up, nil
}

func (a *lent) close() {
	if a.conn != nil {
		a.conn.Close()
	}
}

var errRefused = errors.New("cowork: the guest may list the host's keys and sign with them, nothing more")

func (a *lent) List() ([]*agent.Key, error) {
	up, err := a.upstream()
	if err != nil {
		return nil, err
	}
	return up.List()
}

func (a *lent) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	return a.SignWithFlags(key, data, 0)
}

// SignWithFlags forwards the request, within the rate limit, and audits
// it by the key's fingerprint (and the server's, when the guest bound the
// session).
func (a *lent) SignWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	rec := &audit.Record{Kind: KindSign, Start: time.Now(), Name: ssh.FingerprintSHA256(key), Verdict: audit.Allow}
	if a.bound != "" {
		rec.Dst = "host key " + a.bound
	}
	if a.l.Down != nil {
		if rule := a.l.Down(); rule != "" {
			rec.Verdict, rec.Rule = audit.Deny, rule
			a.l.recordDenied(rec) // the try that may bring the log back, for the next
			return nil, errors.New("cowork: the host cannot write its audit log; signing is refused until it can")
		}
	}
	if !a.l.limit.Allow() {
		rec.Verdict, rec.Rule = audit.Deny, fmt.Sprintf("ssh-agent: more than %d signatures a second", signsPerSecond)
		a.l.recordDenied(rec)
		return nil, errors.New("cowork: too many signing requests; slow down")
	}
	up, err := a.upstream()
	if err != nil {
		return nil, err
	}
	sig, err := up.SignWithFlags(key, data, flags)
	if err != nil {
		rec.Verdict, rec.Error = audit.Deny, err.Error()
		a.l.recordDenied(rec)
		return nil, err
	}
	a.l.Record(rec)
	if a.l.Down != nil && a.l.Down() != "" {
		// Its line failed (or the log went down meanwhile): what is not
		// on the record is not handed over.
		return nil, errors.New("cowork: the host cannot write its audit log; signing is refused until it can")
	}
	return sig, nil
}

func (a *lent) Add(agent.AddedKey) error       { return errRefused }
func (a *lent) Remove(ssh.PublicKey) error     { return errRefused }
func (a *lent) RemoveAll() error               { return errRefused }
func (a *lent) Lock([]byte) error              { return errRefused }
func (a *lent) Unlock([]byte) error            { return errRefused }
func (a *lent) Signers() ([]ssh.Signer, error) { return nil, errRefused }

// Extension passes session bindings to the host's agent, which enforces
// its keys' destination constraints with them; it refuses every other
// extension (query, and whatever an agent may add).
func (a *lent) Extension(kind string, contents []byte) ([]byte, error) {
	if kind != sessionBind {
		return nil, agent.ErrExtensionUnsupported
	}
	var bind struct {
		HostKey   []byte
		SessionID []byte
		Signature []byte
		Forwarded bool
	}
	up, err := a.upstream()
	if err != nil {
		return nil, err
	}
	res, err := up.Extension(kind, contents)
	if err != nil {
		return nil, err
	}
	if ssh.Unmarshal(contents, &bind) == nil {
		if k, err := ssh.ParsePublicKey(bind.HostKey); err == nil {
			a.bound = ssh.FingerprintSHA256(k)
		}
	}
	return res, nil
}

// bounded refuses a request longer than maxMessage before the agent
// server allocates it: it reads the guest's messages' length prefixes as
// they pass.
type bounded struct {
	io.ReadWriter
	conn net.Conn // its read deadline is reset at each message
	left int      // bytes of the current message still to read
	hdr  [4]byte
	have int // bytes of the next length prefix read so far
}

func (b *bounded) Read(p []byte) (int, error) {
	if b.left == 0 {
		// Between messages: read the length prefix (the server asks for
		// exactly its 4 bytes), judge it, and hand it on.
		if b.have == 0 && b.conn != nil {
			_ = b.conn.SetReadDeadline(time.Now().Add(idle))
		}
		n, err := b.ReadWriter.Read(p[:min(len(p), 4-b.have)])
		copy(b.hdr[b.have:], p[:n])
		b.have += n
		if b.have == 4 {
			l := binary.BigEndian.Uint32(b.hdr[:])
			if l > maxMessage {
				return 0, fmt.Errorf("cowork: an agent request of %d bytes, over %d", l, maxMessage)
			}
			b.left, b.have = int(l), 0
		}
		return n, err
	}
	n, err := b.ReadWriter.Read(p[:min(len(p), b.left)])
	b.left -= n
	return n, err
}
