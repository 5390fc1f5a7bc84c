package secretcmd

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
)

// secret runs `cowork secret args...` with stdin and returns its stdout
// and stderr.
func secret(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ios, in, out, errOut := iostreams.Test()
	in.WriteString(stdin)
	name := instance.DefaultName
	err := cmdtest.Prepare(NewCmdSecret(ios, &name, nil), ios, args...).Execute()
	return out.String(), errOut.String(), err
}

const value = "ghp_s3cret-value"

func TestSecretSetLsRm(t *testing.T) {
	t.Setenv("COWORK_SECRET_STORE", "file")
	paths, _ := instancetest.New(t, instance.Config{})
	_, errOut, err := secret(t, value+"\n", "set", "GH_TOKEN", "--host", "GitHub.com")
	if err != nil || !strings.Contains(errOut, "set GH_TOKEN for github.com (stored in secrets.json, mode 0600") || !strings.Contains(errOut, "at its next start") {
		t.Fatalf("set: %q %v", errOut, err)
	}
	cfg, _ := os.ReadFile(paths.Config())
	if strings.Contains(string(cfg), value) {
		t.Fatal("the value is in config.json")
	}
	c, err := instance.Load(instance.DefaultName)
	if err != nil || len(c.Secrets) != 1 || c.Secrets[0].Store != "file" || !strings.HasPrefix(c.Secrets[0].Placeholder, "cowork-secret-") {
		t.Fatalf("config: %+v %v", c.Secrets, err)
	}
	placeholder := c.Secrets[0].Placeholder

	// Set again: the value changes, the placeholder stays (running
	// processes keep theirs).
	if _, _, err := secret(t, "new-value", "set", "GH_TOKEN", "--host", "github.com", "--bearer"); err != nil {
		t.Fatal(err)
	}
	c, _ = instance.Load(instance.DefaultName)
	if len(c.Secrets) != 1 || c.Secrets[0].Placeholder != placeholder || c.Secrets[0].Mode != "bearer" {
		t.Fatalf("set again: %+v", c.Secrets)
	}
	if _, _, err := secret(t, "priv-value", "set", "PRIV", "--host", "gitlab.test:8443", "--header", "private-token"); err != nil {
		t.Fatal(err)
	}

	out, _, err := secret(t, "", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 3 || !strings.HasPrefix(lines[1], "GH_TOKEN") || !strings.Contains(lines[2], "Private-Token") || strings.Contains(out, "new-value") {
		t.Fatalf("ls: %q %v", out, err)
	}
	out, _, err = secret(t, "", "ls", "--json")
	var got []listed
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || len(got) != 2 || got[0].Host != "github.com" || got[1].Host != "gitlab.test:8443" ||
		strings.Contains(out, "new-value") || !strings.Contains(out, `"ca": false`) {
		t.Fatalf("ls --json: %q %v", out, err)
	}

	// A new value alone: host, place and all kept.
	if _, _, err := secret(t, "newer-value", "set", "GH_TOKEN"); err != nil {
		t.Fatal(err)
	}
	c, _ = instance.Load(instance.DefaultName)
	if len(c.Secrets) != 2 || c.Secrets[0].Host != "github.com:443" || c.Secrets[0].Mode != "bearer" || c.Secrets[0].Placeholder != placeholder {
		t.Fatalf("a new value alone: %+v", c.Secrets)
	}
	// rm is all or nothing.
	if _, _, err := secret(t, "", "rm", "GH_TOKEN", "NOPE"); cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "no secret NOPE") {
		t.Fatalf("rm with an unknown name: %v", err)
	}
	if c, _ = instance.Load(instance.DefaultName); len(c.Secrets) != 2 {
		t.Fatalf("a refused rm removed some: %+v", c.Secrets)
	}
	if _, _, err := secret(t, "", "rm", "GH_TOKEN"); err != nil {
		t.Fatal(err)
	}
	store, _ := os.ReadFile(paths.Dir() + "/secrets.json")
	if strings.Contains(string(store), "newer-value") || !strings.Contains(string(store), `"PRIV"`) {
		t.Fatalf("after rm, the store holds %s", store)
	}
	if _, _, err := secret(t, "", "rm", "GH_TOKEN"); cmdutil.ExitCode(err) != 2 {
		t.Fatalf("rm of a secret that is not there: %v", err)
	}
}

func TestSecretSetRefusesBadInput(t *testing.T) {
	t.Setenv("COWORK_SECRET_STORE", "file")
	paths, _ := instancetest.New(t, instance.Config{})
	before, _ := os.ReadFile(paths.Config())
	caFile := t.TempDir() + "/ca.pem"
	os.WriteFile(caFile, []byte("not a certificate"), 0o644)
	badCert := t.TempDir() + "/bad.pem"
	os.WriteFile(badCert, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644)
	for what, args := range map[string][]string{
		"no host":           {"set", "T"},
		"an address":        {"set", "T", "--host", "140.82.112.3"},
		"a wildcard":        {"set", "T", "--host", "*.github.com"},
		"two modes":         {"set", "T", "--host", "github.com", "--bearer", "--basic"},
		"a bad name":        {"set", "MY-TOKEN", "--host", "github.com"},
		"the Host header":   {"set", "T", "--host", "github.com", "--header", "Host"},
		"a bad CA":          {"set", "T", "--host", "github.com", "--ca", caFile},
		"a missing CA":      {"set", "T", "--host", "github.com", "--ca", caFile + ".missing"},
		"no name":           {"set", "--host", "github.com"},
		"rm without a name": {"rm"},
	} {
		if _, _, err := secret(t, value, args...); cmdutil.ExitCode(err) != 2 {
			t.Errorf("%s: %v (exit %d), want exit 2", what, err, cmdutil.ExitCode(err))
		}
	}
	if _, _, err := secret(t, "", "set", "T", "--host", "github.com"); cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "stdin") {
		t.Errorf("an empty value: %v", err)
	}
	if _, _, err := secret(t, "short", "set", "T", "--host", "github.com"); cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "under 8 characters") {
		t.Errorf("a short value: %v", err)
	}
	if _, _, err := secret(t, "a-long-value\r\nX-Evil: 1", "set", "T", "--host", "github.com"); cmdutil.ExitCode(err) != 2 {
		t.Errorf("a value with a line break: %v", err)
	}
	after, _ := os.ReadFile(paths.Config())
	if string(before) != string(after) {
		t.Fatalf("a refused set changed the config:\n%s\n%s", before, after)
	}
	if _, err := os.Stat(paths.Dir() + "/secrets.json"); err == nil {
		t.Fatal("a refused set wrote a value")
	}
}

func TestSecretLsEmpty(t *testing.T) {
	instancetest.New(t, instance.Config{})
	out, errOut, err := secret(t, "", "ls")
	if err != nil || out != "" || !strings.Contains(errOut, "no secrets; set one with `cowork secret set NAME --host HOST`") {
		t.Fatalf("ls: %q %q %v", out, errOut, err)
	}
	if out, _, err := secret(t, "", "ls", "--json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("ls --json: %q %v", out, err)
	}
}
