package guestagent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/tlsca"
)

func secretsRequest(t *testing.T, env []string, ca string) string {
	t.Helper()
	b, err := json.Marshal(agentcall.Request{Method: agentcall.MethodSecrets, Env: env, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// The secrets call puts the CA in the system bundle once, between its
// markers (a second CA replaces the first), and every exec gets the
// variables it does not set itself.
func TestSecretsCallTrustsTheCAAndSetsTheEnv(t *testing.T) {
	root := t.TempDir()
	bundle := filepath.Join(root, systemBundle)
	os.MkdirAll(filepath.Dir(bundle), 0o755)
	const system = "-----BEGIN CERTIFICATE-----\nsystem\n-----END CERTIFICATE-----"
	os.WriteFile(bundle, []byte(system), 0o644) // no final line break
	s := New(Options{TrustRoot: root})
	ca1, _, _ := tlsca.New("one", time.Now())
	ca2, _, _ := tlsca.New("two", time.Now())
	env := []string{"GH_TOKEN=cowork-secret-0123", "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=k", "GIT_CONFIG_VALUE_0=v"}
	for _, ca := range [][]byte{ca1, ca2, ca2} {
		rep := ask(t, s, secretsRequest(t, env, string(ca)))
		if len(rep) != 1 || rep[0].Secrets == nil || rep[0].Secrets.CAFile != "/"+secretCAFile || rep[0].Secrets.Note != "" {
			t.Fatalf("reply %+v", rep)
		}
	}
	b, _ := os.ReadFile(bundle)
	if !strings.HasPrefix(string(b), system+"\n") || strings.Count(string(b), caBegin) != 1 || !strings.Contains(string(b), string(ca2)) || strings.Contains(string(b), string(ca1)) {
		t.Fatalf("the bundle:\n%s", b)
	}
	if own, _ := os.ReadFile(filepath.Join(root, secretCAFile)); string(own) != string(ca2) {
		t.Fatalf("the CA's own file: %s", own)
	}

	got := withSecretVars([]string{"PATH=/bin", "GH_TOKEN=mine"}, s.secretVars())
	if !slices.Contains(got, "GH_TOKEN=mine") || slices.Contains(got, "GH_TOKEN=cowork-secret-0123") ||
		!slices.Contains(got, "GIT_CONFIG_KEY_0=k") || !slices.Contains(got, "NODE_EXTRA_CA_CERTS="+filepath.Join(root, secretCAFile)) {
		t.Fatalf("env %q", got)
	}
	// An exec with git config of its own keeps it whole.
	got = withSecretVars([]string{"GIT_CONFIG_COUNT=2"}, s.secretVars())
	if slices.ContainsFunc(got, func(kv string) bool { return strings.HasPrefix(kv, "GIT_CONFIG_KEY_") }) || !slices.Contains(got, "GH_TOKEN=cowork-secret-0123") {
		t.Fatalf("env with GIT_CONFIG_COUNT: %q", got)
	}

	// Taken back: no variables.
	if rep := ask(t, s, secretsRequest(t, nil, "")); len(rep) != 1 || rep[0].Secrets == nil {
		t.Fatalf("reply %+v", rep)
	}
	if v := s.secretVars(); len(v) != 0 {
		t.Fatalf("after taking back: %q", v)
	}
}

func TestSecretsCallRefusesWhatIsNoVariable(t *testing.T) {
	s := New(Options{TrustRoot: t.TempDir()})
	for _, env := range [][]string{
		{"NOEQUALS"},
		{"BAD-NAME=x"},
		{"=x"},
		{"A=" + strings.Repeat("x", agentcall.MaxSecretEnvLen)},
		{"A=x\x00y"},
		make([]string, agentcall.MaxSecretEnv+1),
	} {
		rep := ask(t, s, secretsRequest(t, env, ""))
		if len(rep) != 1 || rep[0].Kind != agentcall.KindInvalid {
			t.Errorf("%.60q: %+v", env, rep)
		}
	}
	if rep := ask(t, s, secretsRequest(t, []string{"A=b"}, "not a certificate")); len(rep) != 1 || rep[0].Secrets == nil || rep[0].Secrets.Note == "" || rep[0].Secrets.CAFile != "" {
		t.Errorf("a bad CA: %+v", rep)
	}
	if v := s.secretVars(); slices.ContainsFunc(v, func(kv string) bool { return strings.HasPrefix(kv, "NODE_EXTRA_CA_CERTS=") }) {
		t.Errorf("a CA not trusted still named: %q", v)
	}
}

// A trust file that is a symbolic link (a guest user planted it) is not
// written through.
func TestSecretsCARefusesASymlinkedFile(t *testing.T) {
	root := t.TempDir()
	bundle := filepath.Join(root, systemBundle)
	os.MkdirAll(filepath.Dir(bundle), 0o755)
	os.MkdirAll(filepath.Dir(filepath.Join(root, secretCAFile)), 0o755)
	victim := filepath.Join(root, "shadow")
	os.WriteFile(victim, []byte("root:x:0\n"), 0o600)
	os.Symlink(victim, filepath.Join(root, secretCAFile))
	os.WriteFile(bundle, []byte(""), 0o644)
	ca, _, _ := tlsca.New("one", time.Now())
	rep := ask(t, New(Options{TrustRoot: root}), secretsRequest(t, nil, string(ca)))
	if len(rep) != 1 || rep[0].Secrets == nil || !strings.Contains(rep[0].Secrets.Note, "symbolic link") {
		t.Fatalf("reply %+v", rep)
	}
	if b, _ := os.ReadFile(victim); string(b) != "root:x:0\n" {
		t.Fatalf("written through the link: %q", b)
	}
}
