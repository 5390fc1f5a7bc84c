package guestagent

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/smallfile"
)

// Host-held secrets (cowork secret): hostd hands the agent each secret's
// placeholder as a variable every exec gets, with what tools need to use
// it (git's credential helper), and the instance's CA, which the guest
// trusts so that hostd can stand in for the secrets' hosts. The values
// never come here.

// The CA's places in the guest: its own file, where update-ca-certificates
// takes it from (and keeps it through updates), and the system bundle
// that OpenSSL, GnuTLS and curl read, where it goes at once between
// markers (running update-ca-certificates takes seconds).
const (
	secretCAFile = "usr/local/share/ca-certificates/cowork-secrets.crt"
	systemBundle = "etc/ssl/certs/ca-certificates.crt"
	caBegin      = "# cowork secrets CA: begin\n"
	caEnd        = "# cowork secrets CA: end\n"
)

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// secretEnv is what the secrets call set.
type secretEnv struct {
	mu  sync.Mutex
	env []string
}

// secretVars are the variables an exec gets for the secrets.
func (s *Server) secretVars() []string {
	s.secrets.mu.Lock()
	defer s.secrets.mu.Unlock()
	return s.secrets.env
}

// setSecrets checks and keeps env, and trusts ca.
func (s *Server) setSecrets(env []string, ca string) (*agentcall.SecretsReply, error) {
	if len(env) > agentcall.MaxSecretEnv || len(ca) > agentcall.MaxSecretCA {
		return nil, refusef(agentcall.KindInvalid, "secrets: over the bounds (%d variables, a CA of %d bytes)", len(env), len(ca))
	}
	for _, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !envNameRE.MatchString(k) || len(kv) > agentcall.MaxSecretEnvLen || strings.ContainsRune(kv, 0) {
			return nil, refusef(agentcall.KindInvalid, "secrets: %.40q is no variable", kv)
		}
	}
	rep := &agentcall.SecretsReply{}
	var extra []string
	if ca != "" {
		if err := s.trustCA(ca); err != nil {
			rep.Note = "the guest could not trust the secrets CA: " + err.Error()
			s.log.Warn("secrets: trust the CA", "err", err)
		} else {
			root := s.trustRoot()
			rep.CAFile = filepath.Join("/", secretCAFile)
			// Tools with a bundle of their own: Node (npm, Claude Code),
			// pip and Python's requests.
			extra = []string{"NODE_EXTRA_CA_CERTS=" + filepath.Join(root, secretCAFile),
				"PIP_CERT=" + filepath.Join(root, systemBundle), "REQUESTS_CA_BUNDLE=" + filepath.Join(root, systemBundle)}
		}
	}
	s.secrets.mu.Lock()
	s.secrets.env = append(append([]string(nil), env...), extra...)
	s.secrets.mu.Unlock()
	s.log.Info("secrets", "variables", len(env), "ca", rep.CAFile)
	return rep, nil
}

// trustCA writes the CA to its file and into the system bundle, replacing
// the one there before (a clone's source's).
func (s *Server) trustCA(ca string) error {
	block, rest := pem.Decode([]byte(ca))
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return errors.New("the CA is not one PEM certificate")
	}
	root := s.trustRoot()
	file := filepath.Join(root, secretCAFile)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	if err := writeIfChanged(file, []byte(ca)); err != nil {
		return err
	}
	bundle := filepath.Join(root, systemBundle)
	old, err := os.ReadFile(bundle)
	if err != nil {
		return err // no system bundle: nothing reads one
	}
	return writeIfChanged(bundle, withCA(old, ca))
}

func (s *Server) trustRoot() string {
	if s.opts.TrustRoot == "" {
		return "/"
	}
	return s.opts.TrustRoot
}

// withCA is bundle with ca between the markers, in place of what was.
func withCA(bundle []byte, ca string) []byte {
	b := string(bundle)
	if i := strings.Index(b, caBegin); i >= 0 {
		if j := strings.Index(b[i:], caEnd); j >= 0 {
			b = b[:i] + b[i+j+len(caEnd):]
		}
	}
	if b != "" && !strings.HasSuffix(b, "\n") {
		b += "\n"
	}
	return []byte(b + caBegin + strings.TrimRight(ca, "\n") + "\n" + caEnd)
}

// writeIfChanged replaces file's content (smallfile.WriteAtomic),
// keeping its mode, unless it already holds b. A file that is a symbolic link is refused: a guest user who could
// plant one would have root write where it points.
func writeIfChanged(file string, b []byte) error {
	mode := os.FileMode(0o644)
	switch fi, err := os.Lstat(file); {
	case err == nil && fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("%s is a symbolic link; cowork writes only a file of its own there", file)
	case err == nil:
		if old, err := os.ReadFile(file); err == nil && bytes.Equal(old, b) {
			return nil
		}
		mode = fi.Mode().Perm()
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	// A temporary file of a random name, O_EXCL, renamed over file.
	return smallfile.WriteAtomic(file, b, mode)
}

// withSecretVars adds the secrets' variables to an exec's env, each unless
// the exec sets it; git's GIT_CONFIG_* go together or not at all (their
// indices count from GIT_CONFIG_COUNT).
func withSecretVars(env, vars []string) []string {
	own := func(k string) bool { return hasEnv(env, k) }
	gitOwn := own("GIT_CONFIG_COUNT")
	for _, kv := range vars {
		k, _, _ := strings.Cut(kv, "=")
		if own(k) || gitOwn && strings.HasPrefix(k, "GIT_CONFIG_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func hasEnv(env []string, k string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, k+"=") {
			return true
		}
	}
	return false
}
