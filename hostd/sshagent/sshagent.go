// Package sshagent lends the guest the host's SSH agent (cowork's
// --ssh-agent): each connection the guest makes to it is served here, on
// the host, against a connection of its own to the agent at SSH_AUTH_SOCK.
// The keys never leave the host: the guest may list them and ask for
// signatures, each of which is audited; it may not add, remove or lock
// keys, nor take them out. A key the host's OpenSSH agent holds with a
// destination constraint (`ssh-add -h github.com`) stays limited to that
// destination: the guest's session bindings (session-bind@openssh.com)
// are passed to the host's agent, which checks them as for any forwarded
// agent.
package sshagent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
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
// again and again, for keys added with ssh-add -c).
const (
	signsPerSecond = 10
	signBurst      = 20
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
	limit  *rate.Limiter
	once   sync.Once
}

// ErrNoAgent is Serve without a host agent to lend.
var ErrNoAgent = errors.New("no SSH agent on the host (SSH_AUTH_SOCK is not set)")

// Serve serves one guest connection until it closes.
func (l *Lender) Serve(guest net.Conn) error {
	l.once.Do(func() { l.limit = rate.NewLimiter(signsPerSecond, signBurst) })
	if l.Socket == "" {
		return ErrNoAgent
	}
	up, err := net.DialTimeout("unix", l.Socket, 5*time.Second)
	if err != nil {
		return fmt.Errorf("the host's SSH agent at %s: %w", l.Socket, err)
	}
	defer up.Close()
	lent := &lent{up: agent.NewClient(up), l: l}
	return agent.ServeAgent(lent, &bounded{ReadWriter: guest})
}

// lent is the agent the guest sees.
type lent struct {
	up agent.ExtendedAgent
	l  *Lender
	// bound is the host key of the server the guest last said a session
	// is with (session-bind), for the audit.
	bound string
}

var errRefused = errors.New("cowork: the guest may list the host's keys and sign with them, nothing more")

func (a *lent) List() ([]*agent.Key, error) { return a.up.List() }

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
	defer func() { a.l.Record(rec) }()
	if !a.l.limit.Allow() {
		rec.Verdict, rec.Rule = audit.Deny, fmt.Sprintf("ssh-agent: more than %d signatures a second", signsPerSecond)
		return nil, errors.New("cowork: too many signing requests; slow down")
	}
	sig, err := a.up.SignWithFlags(key, data, flags)
	if err != nil {
		rec.Verdict, rec.Error = audit.Deny, err.Error()
	}
	return sig, err
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
	if err := ssh.Unmarshal(contents, &bind); err == nil {
		if k, err := ssh.ParsePublicKey(bind.HostKey); err == nil {
			a.bound = ssh.FingerprintSHA256(k)
		}
	}
	return a.up.Extension(kind, contents)
}

// bounded refuses a request longer than maxMessage before the agent
// server allocates it: it reads the guest's messages' length prefixes as
// they pass.
type bounded struct {
	io.ReadWriter
	left int // bytes of the current message still to read
	hdr  [4]byte
	have int // bytes of the next length prefix read so far
}

func (b *bounded) Read(p []byte) (int, error) {
	if b.left == 0 {
		// Between messages: read the length prefix (the server asks for
		// exactly its 4 bytes), judge it, and hand it on.
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
