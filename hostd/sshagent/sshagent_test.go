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
	mu   sync.Mutex
	exts []string
}

func (h *hostAgent) SignWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	return h.Agent.Sign(key, data)
}

func (h *hostAgent) Extension(kind string, contents []byte) ([]byte, error) {
	h.mu.Lock()
	h.exts = append(h.exts, kind)
	h.mu.Unlock()
	return nil, agent.ErrExtensionUnsupported
}

// lend starts a host agent on a socket and a Lender for it; it returns
// the guest's agent client, the host's agent, its key, and the records.
func lend(t *testing.T) (agent.ExtendedAgent, *hostAgent, ssh.PublicKey, func() []*audit.Record, net.Conn) {
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
	guest, served := net.Pipe()
	t.Cleanup(func() { guest.Close() })
	go func() {
		l.Serve(served)
		served.Close() // as the gateway's loop does
	}()
	signer, _ := ssh.NewSignerFromKey(priv)
	return agent.NewClient(guest), host, signer.PublicKey(), func() []*audit.Record {
		mu.Lock()
		defer mu.Unlock()
		return append([]*audit.Record(nil), recs...)
	}, guest
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
// constraints with them, and name the server in the audit; no other
// extension does.
func TestLenderPassesSessionBindsAlone(t *testing.T) {
	g, host, pub, records, _ := lend(t)
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
	_, _, _, _, guest := lend(t)
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
	if denied != refused {
		t.Errorf("%d refusals, %d audited", refused, denied)
	}
}

func TestLenderWithoutAnAgent(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	if err := (&Lender{Record: func(*audit.Record) {}}).Serve(b); !errors.Is(err, ErrNoAgent) {
		t.Errorf("%v", err)
	}
}
