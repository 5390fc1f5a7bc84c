package cowork

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/secretstore"
)

// Secret is a host-held secret of an instance, as its config keeps it:
// never its value.
type Secret = instance.Secret

// How a secret is carried (SecretSpec.Mode).
const (
	SecretAuthorization = netstack.SecretAuthorization
	SecretBearer        = netstack.SecretBearer
	SecretBasic         = netstack.SecretBasic
	SecretHeader        = netstack.SecretHeader
)

// SecretSpec is a secret to set: the guest's variable Name, the Host it
// may go to (name[:port]), how it is carried (Mode, SecretAuthorization
// when empty; Header for SecretHeader), and CA, PEM certificates trusted
// for Host besides the host's roots.
type SecretSpec struct {
	Name, Host, Mode, Header string
	CA                       []byte
}

// maxCA bounds a secret's CA file.
const maxCA = 64 << 10

// InvalidSecretError is a secret that cannot be set; nothing changed.
type InvalidSecretError struct{ Err error }

func (e *InvalidSecretError) Error() string { return e.Err.Error() }
func (e *InvalidSecretError) Unwrap() error { return e.Err }

// NotAppliedError is a change that is saved, which the running instance
// did not take: it takes it at its next start.
type NotAppliedError struct{ Err error }

func (e *NotAppliedError) Error() string {
	return "saved, but the running instance did not take it (it will at its next start): " + e.Err.Error()
}
func (e *NotAppliedError) Unwrap() error { return e.Err }

// ErrNoSecret is a secret the instance does not have.
var ErrNoSecret = errors.New("no such secret")

// Secrets are the instance's secrets as its config now says, by name.
func (i *Instance) Secrets() ([]Secret, error) {
	c, err := instance.Load(i.Name)
	if err != nil {
		return nil, err
	}
	out := slices.Clone(c.Secrets)
	slices.SortFunc(out, func(a, b Secret) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// CheckSecretSpec says whether spec could be set (before its value is
// asked for): an *InvalidSecretError naming the problem, or nil. It
// returns spec as it would be kept: its host as name:port, its header
// canonical, its CA's certificates alone.
func CheckSecretSpec(spec SecretSpec) (SecretSpec, error) {
	if spec.Mode == "" {
		spec.Mode = SecretAuthorization
	}
	// A stand-in value and placeholder: what is checked here is the rest.
	s, err := netstack.CheckSecret(netstack.Secret{Name: spec.Name, Host: spec.Host, Mode: spec.Mode, Header: spec.Header,
		Placeholder: netstack.PlaceholderPrefix + "0000000000000000", Value: "stand-in value"})
	if err != nil {
		return spec, &InvalidSecretError{Err: err}
	}
	spec.Host, spec.Header = s.Host, s.Header
	if len(spec.CA) > 0 {
		if spec.CA, err = certificatesOf(spec.CA); err != nil {
			return spec, &InvalidSecretError{Err: fmt.Errorf("secret %s: --ca: %w", spec.Name, err)}
		}
	}
	return spec, nil
}

// certificatesOf keeps the certificates of a PEM file, re-encoded: a
// private key beside them stays out of the config.
func certificatesOf(b []byte) ([]byte, error) {
	if len(b) > maxCA {
		return nil, fmt.Errorf("over %d KiB: give the CA's certificates alone", maxCA>>10)
	}
	var out []byte
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, fmt.Errorf("a certificate in it cannot be read: %w", err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes})...)
	}
	if out == nil {
		return nil, errors.New("no PEM certificate in it")
	}
	return out, nil
}

// SetSecret keeps value for spec: in the host's keychain where there is
// one (secretstore.Preferred), else a 0600 file in the instance's folder.
// The guest gets a placeholder in the variable spec.Name, the same one
// for as long as the secret is set (a value set again keeps it), and
// the network swaps it for value on the way to spec.Host alone. A running
// instance takes it at once (applied); a stopped one at its next start.
// A *NotAppliedError says the change is saved, and the running instance
// did not take it.
func (i *Instance) SetSecret(ctx context.Context, spec SecretSpec, value string) (applied bool, err error) {
	if err := i.LocalOnly(OpSecret); err != nil {
		return false, err
	}
	spec, err = CheckSecretSpec(spec)
	if err != nil {
		return false, err
	}
	if err := netstack.CheckSecretValue(value); err != nil {
		return false, &InvalidSecretError{Err: fmt.Errorf("secret %s: %w", spec.Name, err)}
	}
	store := secretstore.Open(i.Paths.Dir())
	ref := Secret{Name: spec.Name, Host: spec.Host, Mode: spec.Mode, Header: spec.Header, CA: string(spec.CA),
		Store: secretstore.Preferred(), Set: time.Now().UTC()}
	var old *Secret
	var oldValue string
	var stored bool
	c, err := instance.UpdateConfig(i.Name, func(c *instance.Config) error {
		at := slices.IndexFunc(c.Secrets, func(s Secret) bool { return s.Name == spec.Name })
		if at < 0 && len(c.Secrets) >= netstack.MaxSecrets {
			return &InvalidSecretError{Err: fmt.Errorf("%s has %d secrets, the most it can: remove one first with `cowork secret rm NAME%s`", i.Name, netstack.MaxSecrets, instance.NameFlag(i.Name))}
		}
		ref.Placeholder = netstack.NewPlaceholder()
		if at >= 0 {
			o := c.Secrets[at]
			old, ref.Placeholder = &o, o.Placeholder
			if o.Store == ref.Store {
				// Put back should the config not be saved; one that cannot
				// be read is not replaced at all.
				var err error
				if oldValue, err = store.Get(o.Store, o.Name); err != nil {
					return fmt.Errorf("read the value %s has now, to keep it should this fail: %w", o.Name, err)
				}
			}
		}
		if err := store.Set(ref.Store, ref.Name, value); err != nil {
			return err
		}
		stored = true
		if at >= 0 {
			c.Secrets[at] = ref
		} else {
			c.Secrets = append(c.Secrets, ref)
		}
		return nil
	})
	if err != nil {
		if stored { // the value is kept, the config that names it is not
			if oldValue != "" {
				_ = store.Set(ref.Store, ref.Name, oldValue)
			} else {
				_ = store.Delete(ref.Store, ref.Name)
			}
		}
		return false, err
	}
	i.Config = c
	if old != nil && old.Store != ref.Store {
		_ = store.Delete(old.Store, old.Name) // best effort: the config no longer names it
	}
	applied, leftOut, err := i.reloadSecrets(ctx)
	for _, l := range leftOut {
		if strings.HasPrefix(l, spec.Name+" ") {
			return false, &NotAppliedError{Err: errors.New(l)}
		}
	}
	return applied, err
}

// RemoveSecrets forgets the named secrets and their values, all or none
// (a name the instance does not have refuses them all: ErrNoSecret); the
// guest's placeholders for them stop working at once when it runs.
func (i *Instance) RemoveSecrets(ctx context.Context, names ...string) (applied bool, err error) {
	if err := i.LocalOnly(OpSecret); err != nil {
		return false, err
	}
	var gone []Secret
	c, err := instance.UpdateConfig(i.Name, func(c *instance.Config) error {
		var missing []string
		for _, n := range names {
			if !slices.ContainsFunc(c.Secrets, func(s Secret) bool { return s.Name == n }) {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%s has no secret %s (`cowork secret ls%s` lists them); none was removed: %w",
				i.Name, strings.Join(missing, ", "), instance.NameFlag(i.Name), ErrNoSecret)
		}
		c.Secrets = slices.DeleteFunc(c.Secrets, func(s Secret) bool {
			if slices.Contains(names, s.Name) {
				gone = append(gone, s)
				return true
			}
			return false
		})
		return nil
	})
	if err != nil {
		return false, err
	}
	i.Config = c
	applied, _, err = i.reloadSecrets(ctx)
	store := secretstore.Open(i.Paths.Dir())
	for _, s := range gone {
		if derr := store.Delete(s.Store, s.Name); derr != nil && err == nil {
			err = fmt.Errorf("forget the value of %s: %w", s.Name, derr)
		}
	}
	return applied, err
}

// reloadSecrets has a running instance's hostd take its secrets as the
// config now says; it returns what hostd left out (NAME first, then why).
func (i *Instance) reloadSecrets(ctx context.Context) (applied bool, leftOut []string, err error) {
	c, err := i.Dial()
	switch {
	case errors.Is(err, ErrNotRunning):
		return false, nil, nil
	case err != nil:
		return false, nil, &NotAppliedError{Err: err}
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := c.ReloadSecrets(ctx)
	if err != nil {
		return false, nil, &NotAppliedError{Err: err}
	}
	// Booting: its network loads them as it comes up.
	return true, r.LeftOut, nil
}
