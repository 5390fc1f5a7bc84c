package sshagent

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// hostAgent is the host's agent: a keyring with one key that records the
// extensions it is sent.
type hostAgent struct {
	agent.Agent
	mu         sync.Mutex
	exts       []string
	acceptBind bool // answers a session-bind with success, as OpenSSH's does a good one
}

func (h *hostAgent) SignWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	return h.Agent.Sign(key, data)
}

func (h *hostAgent) Extension(kind string, contents []byte) ([]byte, error) {
	h.mu.Lock()
	h.exts = append(h.exts, kind)
	accept := h.acceptBind
	h.mu.Unlock()
	if accept {
		return []byte{6}, nil // SSH_AGENT_SUCCESS
	}
	return nil, agent.ErrExtensionUnsupported
}

// lent is a Lender under test: the host's agent, its key, the records.
type lentTest struct {
	l       *Lender
	host    *hostAgent
	pub     ssh.PublicKey
	records func() []*audit.Record
}

// guest opens one more guest connection to the Lender, with an agent
// client on it; Serve's error comes on the channel.
func (lt *lentTest) guest(t *testing.T) (agent.ExtendedAgent, net.Conn, <-chan error) {
	guest, done := lt.raw(t)
	return agent.NewClient(guest), guest, done
}

// raw opens one more guest connection, for the test to speak on (an
// agent client reads the connection as soon as it is made).
func (lt *lentTest) raw(t *testing.T) (net.Conn, <-chan error) {
	guest, served := net.Pipe()
	t.Cleanup(func() { guest.Close() })
	done := make(chan error, 1)
	go func() {
		done <- lt.l.Serve(served)
		served.Close() // as the gateway's loop does
	}()
	return guest, done
}

// lend starts a host agent on a socket and a Lender for it; it returns
// the guest's agent client, the host's agent, its key, and the records.
func lend(t *testing.T) (agent.ExtendedAgent, *hostAgent, ssh.PublicKey, func() []*audit.Record, net.Conn) {
	lt := newLent(t)
	g, conn, _ := lt.guest(t)
	return g, lt.host, lt.pub, lt.records, conn
}

func newLent(t *testing.T) *lentTest {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	ring := agent.NewKeyring()
	if err := ring.Add(agent.AddedKey{PrivateKey: priv, Comment: "host key"}); err != nil {
		t.Fatal(err)
	}
	host := &hostAgent{Agent: ring}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go agent.ServeAgent(host, c)
		}
	}()
	var mu sync.Mutex
	var recs []*audit.Record
	l := &Lender{Socket: sock, Record: func(r *audit.Record) { mu.Lock(); recs = append(recs, r); mu.Unlock() }}
	signer, _ := ssh.NewSignerFromKey(priv)
	return &lentTest{l: l, host: host, pub: signer.PublicKey(), records: func() []*audit.Record {
		mu.Lock()
		defer mu.Unlock()
		return append([]*audit.Record(nil), recs...)
	}}
}

// The guest lists the host's keys and gets signatures, each audited by
// the key's fingerprint; it cannot add, remove, lock or take keys out.
func TestLenderListsAndSigns(t *testing.T) {
	g, host, pub, records, _ := lend(t)
	keys, err := g.List()
	if err != nil || len(keys) != 1 || keys[0].Comment != "host key" {
		t.Fatalf("list: %v %v", keys, err)
	}
	sig, err := g.Sign(pub, []byte("data"))
	if err != nil || pub.Verify([]byte("data"), sig) != nil {
		t.Fatalf("sign: %v", err)
	}
	recs := records()
	if len(recs) != 1 || recs[0].Kind != KindSign || recs[0].Name != ssh.FingerprintSHA256(pub) || recs[0].Verdict != audit.Allow {
		t.Errorf("records %+v", recs)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	for name, err := range map[string]error{
		"add":        g.Add(agent.AddedKey{PrivateKey: other}),
		"remove":     g.Remove(pub),
		"remove all": g.RemoveAll(),
		"lock":       g.Lock([]byte("pass")),
		"unlock":     g.Unlock([]byte("pass")),
	} {
		if err == nil {
			t.Errorf("%s: allowed", name)
		}
	}
	if keys, _ := host.List(); len(keys) != 1 {
		t.Errorf("the host's agent holds %d keys after the guest's attempts", len(keys))
	}
}

// Session bindings reach the host's agent, which enforces destination
// constraints with them, and, once it accepted one, name the server in
// the audit; no other extension reaches it.
func TestLenderPassesSessionBindsAlone(t *testing.T) {
	g, host, pub, records, _ := lend(t)
	host.acceptBind = true
	_, hostKeyPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, _ := ssh.NewSignerFromKey(hostKeyPriv)
	bind := ssh.Marshal(struct {
		HostKey, SessionID, Signature []byte
		Forwarded                     bool
	}{hostKey.PublicKey().Marshal(), []byte("session"), []byte("sig"), false})
	g.Extension("session-bind@openssh.com", bind)
	if _, err := g.Extension("query", nil); !errors.Is(err, agent.ErrExtensionUnsupported) {
		t.Errorf("query: %v", err)
	}
	host.mu.Lock()
	exts := host.exts
	host.mu.Unlock()
	if len(exts) != 1 || exts[0] != "session-bind@openssh.com" {
		t.Errorf("the host's agent got the extensions %q", exts)
	}
	g.Sign(pub, []byte("data"))
	recs := records()
	if len(recs) != 1 || recs[0].Dst != "host key "+ssh.FingerprintSHA256(hostKey.PublicKey()) {
		t.Errorf("records %+v", recs)
	}
}

// A request longer than maxMessage ends the connection before the agent
// server allocates it.
func TestLenderRefusesAHugeRequest(t *testing.T) {
	guest, _ := newLent(t).raw(t)
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 16<<20)
	guest.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := guest.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := guest.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("after a 16 MiB request's header: %v, want the connection closed", err)
	}
}

// A guest asking for signatures in a loop is held to the rate, and the
// refusals are audited.
func TestLenderRateLimitsSigning(t *testing.T) {
	g, _, pub, records, _ := lend(t)
	refused := 0
	for range signBurst + 10 {
		if _, err := g.Sign(pub, []byte("x")); err != nil {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("no request refused")
	}
	denied := 0
	for _, r := range records() {
		if r.Verdict == audit.Deny && strings.Contains(r.Rule, "signatures a second") {
			denied++
		}
	}
	if denied == 0 || denied > deniedBurst {
		t.Errorf("%d refusals, %d recorded; want some, at most %d", refused, denied, deniedBurst)
	}
}

func TestLenderWithoutAnAgent(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	if err := (&Lender{Record: func(*audit.Record) {}}).Serve(b); !errors.Is(err, ErrNoAgent) {
		t.Errorf("%v", err)
	}
}

// A binding the host's agent refuses names no server in the audit.
func TestLenderRecordsOnlyAcceptedBinds(t *testing.T) {
	g, _, pub, records, _ := lend(t) // the host refuses every extension
	_, hostKeyPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, _ := ssh.NewSignerFromKey(hostKeyPriv)
	bind := ssh.Marshal(struct {
		HostKey, SessionID, Signature []byte
		Forwarded                     bool
	}{hostKey.PublicKey().Marshal(), []byte("session"), []byte("sig"), false})
	if _, err := g.Extension("session-bind@openssh.com", bind); err == nil {
		t.Fatal("a refused binding went through")
	}
	g.Sign(pub, []byte("data"))
	if recs := records(); len(recs) != 1 || recs[0].Dst != "" {
		t.Errorf("records %+v", recs)
	}
}

// The limits are the instance's, not a connection's: signatures over
// two connections share the rate, and past maxConns connections are
// refused; a refusal's records are themselves rate-limited, counting
// those left out.
func TestLenderLimitsAreTheInstances(t *testing.T) {
	lt := newLent(t)
	g1, _, _ := lt.guest(t)
	g2, _, _ := lt.guest(t)
	refused := 0
	for i := range signBurst + 10 {
		g := g1
		if i%2 == 1 {
			g = g2
		}
		if _, err := g.Sign(lt.pub, []byte("x")); err != nil {
			refused++
		}
	}
	if refused == 0 {
		t.Error("two connections got past the instance's rate")
	}
	denied, suppressed := 0, int64(0)
	for _, r := range lt.records() {
		if r.Verdict == audit.Deny {
			denied++
			suppressed += r.Suppressed
		}
	}
	if denied > deniedBurst || denied == 0 || int64(denied)+suppressed > int64(refused) {
		t.Errorf("%d refusals: %d recorded, %d counted as left out", refused, denied, suppressed)
	}
	var ends []<-chan error
	for range maxConns {
		_, _, done := lt.guest(t)
		ends = append(ends, done)
	}
	busy := 0
	for _, done := range ends {
		select {
		case err := <-done:
			if errors.Is(err, ErrBusy) {
				busy++
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	if busy != 2 { // the two above hold their places
		t.Errorf("%d connections past the bound refused, want 2", busy)
	}
}

// A length prefix that arrives a byte at a time is read as one.
func TestLenderReadsASplitPrefix(t *testing.T) {
	guest, _ := newLent(t).raw(t)
	req := []byte{0, 0, 0, 1, 11} // SSH_AGENTC_REQUEST_IDENTITIES
	guest.SetDeadline(time.Now().Add(5 * time.Second))
	for _, b := range req {
		if _, err := guest.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	var hdr [4]byte
	if _, err := io.ReadFull(guest, hdr[:]); err != nil {
		t.Fatalf("no answer to a request sent a byte at a time: %v", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > 4096 {
		t.Fatalf("an answer of %d bytes (header %v)", n, hdr)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(guest, body); err != nil || body[0] != 12 { // SSH_AGENT_IDENTITIES_ANSWER
		t.Errorf("answer %v %v", body, err)
	}
}

// While the audit log cannot be written, the host's agent signs nothing
// for the guest, on a connection opened before as on any: the refusal is
// recorded (the write that may bring the log back), and signing works
// again once the log does.
func TestLenderSignsNothingOffTheRecord(t *testing.T) {
	lt := newLent(t)
	var down atomic.Value
	down.Store("")
	lt.l.Down = func() string { return down.Load().(string) }
	g, _, _ := lt.guest(t)
	if _, err := g.Sign(lt.pub, []byte("before")); err != nil {
		t.Fatal(err)
	}
	down.Store("audit: the host cannot write the audit log")
	if sig, err := g.Sign(lt.pub, []byte("while down")); err == nil || sig != nil {
		t.Fatalf("signed while the audit was down: %v %v", sig, err)
	}
	recs := lt.records()
	if len(recs) != 2 || recs[1].Verdict != audit.Deny || recs[1].Rule != "audit: the host cannot write the audit log" {
		t.Fatalf("records %+v", recs)
	}
	down.Store("")
	if _, err := g.Sign(lt.pub, []byte("after")); err != nil {
		t.Errorf("sign once the log is back: %v", err)
	}
	// A signature whose own line fails (the log goes down with it) is
	// withheld.
	record := lt.l.Record
	lt.l.Record = func(r *audit.Record) {
		record(r)
		down.Store("audit: the host cannot write the audit log")
	}
	if sig, err := g.Sign(lt.pub, []byte("its line fails")); err == nil || sig != nil {
		t.Errorf("a signature whose line failed was handed over: %v %v", sig, err)
	}
}
