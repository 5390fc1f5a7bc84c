package hostd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/agentrpc"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/secretstore"
	"github.com/coworkhq/cowork/internal/tlsca"
)

// Host-held secrets (`cowork secret`): hostd reads their values from
// where the host keeps them, gives them to the network (which swaps the
// guest's placeholders for them on the way to their hosts) and gives the
// guest's agent the placeholders and the instance's CA. Values stay in
// hostd's memory: never in a log line, the config, or the guest.

// secretsCA is the instance's own authority, made at its first start and
// kept in its folder.
func (d *Daemon) secretsCA() (*tls.Certificate, []byte, error) {
	certPEM, err1 := os.ReadFile(d.paths.SecretsCA())
	keyPEM, err2 := os.ReadFile(d.paths.SecretsCAKey())
	if err1 == nil && err2 == nil {
		ca, err := tlsca.Load(certPEM, keyPEM)
		if err == nil {
			// The key is the host's alone: a copy made looser is made 0600 again.
			if fi, err := os.Stat(d.paths.SecretsCAKey()); err == nil && fi.Mode().Perm()&0o077 != 0 {
				d.log.Warn("the secrets CA's key could be read by others; made it 0600", "was", fi.Mode().Perm().String())
				if err := os.Chmod(d.paths.SecretsCAKey(), 0o600); err != nil {
					return nil, nil, err
				}
			}
			return ca, certPEM, nil
		}
		d.log.Warn("the secrets CA is unreadable; making a new one", "err", err)
	} else if !errors.Is(err1, os.ErrNotExist) && err1 != nil || !errors.Is(err2, os.ErrNotExist) && err2 != nil {
		return nil, nil, fmt.Errorf("read the secrets CA: %w", errors.Join(err1, err2))
	}
	certPEM, keyPEM, err := tlsca.New(d.name, time.Now())
	if err != nil {
		return nil, nil, err
	}
	if err := instance.WriteFileAtomic(d.paths.SecretsCAKey(), keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	if err := instance.WriteFileAtomic(d.paths.SecretsCA(), certPEM, 0o644); err != nil {
		return nil, nil, err
	}
	ca, err := tlsca.Load(certPEM, keyPEM)
	return ca, certPEM, err
}

// loadSecrets gives the network the instance's secrets, their values read
// from their stores; one whose value cannot be read, or that the network
// refuses, is left out. It returns the ones given, and why each other one
// was left out.
func (d *Daemon) loadSecrets(n *netstack.Stack, refs []instance.Secret) (kept []instance.Secret, left []string) {
	store := secretstore.Open(d.paths.Dir())
	var list []netstack.Secret
	for _, r := range refs {
		v, err := store.Get(r.Store, r.Name)
		if err == nil {
			s := netstack.Secret{Name: r.Name, Host: r.Host, Mode: r.Mode, Header: r.Header,
				Placeholder: r.Placeholder, Value: v, CA: []byte(r.CA)}
			if s, err = netstack.CheckSecret(s); err == nil {
				list = append(list, s)
				kept = append(kept, r)
				continue
			}
		}
		// The store's and the check's errors name the secret, never its value.
		left = append(left, fmt.Sprintf("%s is left out: %v", r.Name, err))
		d.events.emit(controlwire.PhaseNote, "secret "+r.Name+" is left out", err)
	}
	if err := n.SetSecrets(list); err != nil { // each checked, its CA too: only the bound is left
		d.events.emit(controlwire.PhaseNote, "the secrets are left out", err)
		_ = n.SetSecrets(nil)
		return nil, []string{"all are left out: " + err.Error()}
	}
	return kept, left
}

// lendSecrets gives the guest's agent the placeholders of the secrets the
// network holds, and the CA, at each boot and resume and after a reload.
// A resumed guest may hold placeholders from before: it is told even when
// there are none now.
func (d *Daemon) lendSecrets(ctx context.Context) {
	d.secretsMu.Lock()
	defer d.secretsMu.Unlock()
	d.lendSecretsLocked(ctx)
}

func (d *Daemon) lendSecretsLocked(ctx context.Context) {
	d.mu.Lock()
	agent, refs, caPEM, lent := d.agent, d.secrets, d.secretsCAPEM, d.secretsLent || d.resumed
	d.mu.Unlock()
	if agent == nil || len(refs) == 0 && !lent {
		return
	}
	env, ca := secretEnv(refs), ""
	if len(refs) > 0 {
		ca = string(caPEM)
	}
	cctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
	defer cancel()
	caFile, note, err := agent.Secrets(cctx, env, ca)
	if err != nil {
		// A guest resumed with an agent from before secrets has none to
		// take back: nothing to say.
		if len(refs) > 0 || !agentrpc.IsUnimplemented(err) {
			d.events.emit(controlwire.PhaseNote, "the guest could not take the secrets' placeholders", err)
		}
		return
	}
	if note != "" {
		d.events.emit(controlwire.PhaseNote, note, nil)
	}
	d.mu.Lock()
	d.secretsLent = len(refs) > 0
	d.mu.Unlock()
	d.log.Info("lent the guest the secrets' placeholders", "secrets", len(refs), "ca", caFile)
}

// secretEnv is what every exec in the guest gets: each secret's variable
// holding its placeholder, and git's credential helper for the hosts of
// those carried in Authorization (git sends them as a Basic password).
// For such a host, helpers configured before (a store of old passwords)
// are set aside (an empty helper resets git's list), and the helper
// answers the placeholder itself, not the variable, which a command may
// have dropped (sudo, env -i).
func secretEnv(refs []instance.Secret) []string {
	var env, git []string
	seen := map[string]bool{}
	for _, r := range refs {
		env = append(env, r.Name+"="+r.Placeholder)
		if r.Mode != netstack.SecretAuthorization && r.Mode != netstack.SecretBasic || seen[r.Host] {
			continue
		}
		seen[r.Host] = true
		key := "credential.https://" + strings.TrimSuffix(r.Host, ":443") + ".helper"
		// The placeholder is hex after a fixed prefix: nothing to quote.
		git = append(git, key, "", key,
			`!f() { test "$1" = get || return 0; printf 'username=x-access-token\npassword=`+r.Placeholder+`\n'; }; f`)
	}
	if len(git) > 0 {
		env = append(env, fmt.Sprintf("GIT_CONFIG_COUNT=%d", len(git)/2))
		for i := 0; i < len(git); i += 2 {
			env = append(env, fmt.Sprintf("GIT_CONFIG_KEY_%d=%s", i/2, git[i]), fmt.Sprintf("GIT_CONFIG_VALUE_%d=%s", i/2, git[i+1]))
		}
	}
	return env
}

// ReloadSecrets takes the instance's secrets as its config now says
// (`cowork secret set/rm` changed them). Before the network is up, the
// config's list is what it will load (Booting); once up, each secret left
// out (its value unreadable) is named, and the others are in use.
func (s *controlServer) ReloadSecrets(ctx context.Context) (*controlwire.SecretsReloaded, error) {
	d := s.d
	d.secretsMu.Lock()
	defer d.secretsMu.Unlock()
	cfg, err := instance.Load(d.name)
	if err != nil {
		return nil, controlwire.Errorf(controlwire.CodeInternal, "read the config: %v", err)
	}
	d.mu.Lock()
	d.cfg.Secrets = cfg.Secrets
	n := d.net
	d.mu.Unlock()
	if n == nil {
		return &controlwire.SecretsReloaded{Booting: true}, nil // startNetwork loads them
	}
	kept, left := d.loadSecrets(n, cfg.Secrets)
	d.mu.Lock()
	d.secrets = kept
	d.mu.Unlock()
	d.lendSecretsLocked(ctx)
	d.log.Info("secrets reloaded", "secrets", len(kept), "left_out", len(left))
	return &controlwire.SecretsReloaded{LeftOut: left}, nil
}
