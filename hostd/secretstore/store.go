// Package secretstore keeps the values of an instance's host-held secrets
// (`cowork secret set`) where the host keeps credentials: the macOS
// Keychain; on Linux the Secret Service when the session has one, else a
// file only the user can read in the instance's folder. What the guest
// sees of a secret (its name, host and placeholder) is in the instance's
// config; only hostd and the CLI that sets a value read this.
package secretstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/zalando/go-keyring"

	"github.com/coworkhq/cowork/internal/smallfile"
)

// Where a value is kept.
const (
	Keychain      = "keychain"       // macOS
	SecretService = "secret-service" // Linux, a desktop session's keyring
	File          = "file"           // FileName in the instance's folder, mode 0600
)

// FileName is the file store in an instance's folder.
const FileName = "secrets.json"

// keyringService names cowork's entries in the keychain.
const keyringService = "cowork"

// maxKeychainValue is the longest value go-keyring stores in the macOS
// Keychain: it passes the value base64'd in a command of 4 KiB at most.
const maxKeychainValue = 2800

// keyringTimeout bounds a keychain call: a locked keyring may ask the
// user, and hostd has no one to ask.
const keyringTimeout = 10 * time.Second

// Store is the values of one instance's secrets.
type Store struct {
	dir string // the instance's folder
}

// Open is the store of the instance in dir.
func Open(dir string) *Store { return &Store{dir: dir} }

// Preferred is where a new value goes: the keychain where there is one,
// else the file. COWORK_SECRET_STORE=file chooses the file.
func Preferred() string {
	if os.Getenv("COWORK_SECRET_STORE") == File {
		return File
	}
	switch {
	case runtime.GOOS == "darwin":
		return Keychain
	case runtime.GOOS == "linux" && os.Getenv("DBUS_SESSION_BUS_ADDRESS") != "" && probeKeyring():
		return SecretService
	}
	return File
}

// probeKeyring reports whether the keyring answers: an entry that does not
// exist is not found, rather than an error about the keyring.
func probeKeyring() bool {
	_, err := withTimeout(func() (string, error) { return keyring.Get(keyringService, "cowork-probe") })
	return errors.Is(err, keyring.ErrNotFound)
}

// Set keeps value for name in where (Preferred's answer), replacing any.
func (s *Store) Set(where, name, value string) error {
	if where == File {
		return s.updateFile(func(m map[string]string) { m[name] = value })
	}
	if where == Keychain && len(value) > maxKeychainValue {
		return fmt.Errorf("%s's value is over the macOS Keychain's %d bytes (as cowork stores it); keep it in a file with COWORK_SECRET_STORE=file", name, maxKeychainValue)
	}
	_, err := withTimeout(func() (string, error) { return "", keyring.Set(keyringService, s.account(name), value) })
	if err != nil {
		return fmt.Errorf("keep %s in the %s: %w (unlock it, or keep values in a file with COWORK_SECRET_STORE=file)", name, where, err)
	}
	return nil
}

// Get is the value kept for name in where.
func (s *Store) Get(where, name string) (string, error) {
	if where == File {
		m, err := s.readFile()
		if err != nil {
			return "", err
		}
		v, ok := m[name]
		if !ok {
			return "", fmt.Errorf("%s holds no value for %s; give it one with `cowork secret set %s` (and the instance's --name)", s.file(), name, name)
		}
		return v, nil
	}
	v, err := withTimeout(func() (string, error) { return keyring.Get(keyringService, s.account(name)) })
	if err != nil {
		return "", fmt.Errorf("read %s from the %s: %w", name, where, err)
	}
	return v, nil
}

// Delete removes name's value from where; one already gone is no error.
func (s *Store) Delete(where, name string) error {
	if where == File {
		return s.updateFile(func(m map[string]string) { delete(m, name) })
	}
	_, err := withTimeout(func() (string, error) { return "", keyring.Delete(keyringService, s.account(name)) })
	if err != nil && !errors.Is(err, keyring.ErrNotFound) {
		return fmt.Errorf("remove %s from the %s: %w", name, where, err)
	}
	return nil
}

// account is name's entry in the keychain: the instance's folder names the
// instance, and the cowork home it belongs to.
func (s *Store) account(name string) string { return filepath.Join(s.dir, name) }

func (s *Store) file() string { return filepath.Join(s.dir, FileName) }

func (s *Store) readFile() (map[string]string, error) {
	b, err := os.ReadFile(s.file())
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w; remove it and set the secrets again", s.file(), err)
	}
	return m, nil
}

// updateFile rewrites the file whole, 0600, through a temporary file
// renamed over it: a crash leaves the old or the new.
func (s *Store) updateFile(change func(map[string]string)) error {
	// One writer at a time: two commands each rewriting the whole file
	// would lose one's change.
	lock, err := os.OpenFile(filepath.Join(s.dir, "secrets.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	m, err := s.readFile()
	if err != nil {
		return err
	}
	change(m)
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return smallfile.WriteAtomic(s.file(), b, 0o600)
}

// withTimeout runs a keychain call, giving up after keyringTimeout.
func withTimeout(call func() (string, error)) (string, error) {
	type result struct {
		v   string
		err error
	}
	done := make(chan result, 1)
	go func() { v, err := call(); done <- result{v, err} }()
	select {
	case r := <-done:
		return r.v, r.err
	case <-time.After(keyringTimeout):
		return "", fmt.Errorf("the keychain did not answer within %s (is it locked?)", keyringTimeout)
	}
}
