package guestagent

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// A fork (a guest resumed from another instance's saved memory) starts
// with its parent's kernel random state, machine-id and hostname: two
// forks would draw the same "random" numbers (keys, TLS secrets, UUIDs)
// until the kernel next reseeds. The personalize call makes it its own.

// PersonalizeSystem is what the personalize call changes: the guest's
// random pool, its machine-id files and its hostname. The agent's main
// sets the real one (RealPersonalize); without one the call is refused,
// so that an agent run on a host in a test never touches that host.
type PersonalizeSystem struct {
	// Reseed mixes seed into the kernel's pool, credited, and reseeds the
	// CRNG from it.
	Reseed func(seed []byte) error
	// SetMachineID writes id (32 hex digits) as the machine-id.
	SetMachineID func(id string) error
	// SetHostname sets the hostname, now and for the next boot.
	SetHostname func(name string) error
}

// hostnameRE is a hostname cowork gives: one DNS label.
var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (s *Server) personalize(seed []byte, hostname string) (*agentcall.PersonalizeReply, error) {
	const method = "personalize: "
	p := s.opts.Personalize
	switch {
	case p == nil:
		return nil, &refusal{agentcall.KindFailed, method + "this agent cannot change its system (not the guest's own)"}
	case len(seed) != agentcall.SeedSize:
		return nil, &refusal{agentcall.KindInvalid, method + "want a seed of 64 bytes"}
	case !hostnameRE.MatchString(hostname):
		return nil, &refusal{agentcall.KindInvalid, method + "bad hostname " + quoteShort(hostname)}
	}
	// The pool first: the machine-id is drawn from it.
	if err := p.Reseed(seed); err != nil {
		return nil, &refusal{agentcall.KindFailed, method + "reseed: " + err.Error()}
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, &refusal{agentcall.KindFailed, method + err.Error()}
	}
	id := hex.EncodeToString(b[:])
	if err := p.SetMachineID(id); err != nil {
		return nil, &refusal{agentcall.KindFailed, method + "machine-id: " + err.Error()}
	}
	if err := p.SetHostname(hostname); err != nil {
		return nil, &refusal{agentcall.KindFailed, method + "hostname: " + err.Error()}
	}
	s.log.Info("personalized", "machine_id", id, "hostname", hostname)
	return &agentcall.PersonalizeReply{MachineID: id}, nil
}
