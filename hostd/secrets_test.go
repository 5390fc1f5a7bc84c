package hostd

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
	"github.com/coworkhq/cowork/hostd/secretstore"
)

// Every secret's variable, and git's credential helper (reset, then
// cowork's) for the hosts of those git can carry (Authorization, Basic),
// the first per host.
func TestSecretEnv(t *testing.T) {
	env := secretEnv([]instance.Secret{
		{Name: "GH", Host: "github.com:443", Mode: "authorization", Placeholder: "cowork-secret-aa"},
		{Name: "API", Host: "api.github.com:443", Mode: "bearer", Placeholder: "cowork-secret-bb"},
		{Name: "GH2", Host: "github.com:443", Mode: "basic", Placeholder: "cowork-secret-cc"},
		{Name: "REG", Host: "git.test:8443", Mode: "basic", Placeholder: "cowork-secret-dd"},
	})
	for _, want := range []string{"GH=cowork-secret-aa", "API=cowork-secret-bb", "GH2=cowork-secret-cc", "REG=cowork-secret-dd",
		"GIT_CONFIG_COUNT=4", "GIT_CONFIG_KEY_0=credential.https://github.com.helper", "GIT_CONFIG_VALUE_0=",
		"GIT_CONFIG_KEY_1=credential.https://github.com.helper", "GIT_CONFIG_KEY_3=credential.https://git.test:8443.helper"} {
		if !slices.Contains(env, want) {
			t.Errorf("no %q in %q", want, env)
		}
	}
	if len(env) != 4+1+8 {
		t.Errorf("env %q", env)
	}
}

// git, with a helper of the user's own that remembers an old password,
// asks cowork's for the host: the placeholder, even with the variable
// gone; store and erase do nothing; another host gets nothing.
func TestSecretEnvGitHelperRuns(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	env := secretEnv([]instance.Secret{{Name: "GH", Host: "github.com:443", Mode: "authorization", Placeholder: "cowork-secret-aa"}})
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, ".git-credentials"), []byte("https://olduser:stale@github.com\n"), 0o600)
	os.WriteFile(filepath.Join(home, ".gitconfig"), []byte("[credential]\n\thelper = store\n"), 0o600)
	git := func(input string, args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		// The variable GH is not there: the helper does not need it.
		cmd.Env = append([]string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0"}, env[1:]...)
		cmd.Dir = home
		cmd.Stdin = strings.NewReader(input)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := git("protocol=https\nhost=github.com\n\n", "credential", "fill")
	if err != nil || !strings.Contains(out, "username=x-access-token\n") || !strings.Contains(out, "password=cowork-secret-aa\n") {
		t.Fatalf("git credential fill: %s %v", out, err)
	}
	for _, verb := range []string{"approve", "reject"} {
		if out, err := git("protocol=https\nhost=github.com\nusername=x-access-token\npassword=cowork-secret-aa\n\n", "credential", verb); err != nil || out != "" {
			t.Errorf("git credential %s: %q %v", verb, out, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(home, ".git-credentials")); strings.Contains(string(b), "cowork-secret") {
		t.Errorf("the user's store kept the placeholder: %s", b)
	}
	if out, err := git("protocol=https\nhost=evil.test\n\n", "credential", "fill"); err == nil || strings.Contains(out, "cowork-secret-aa") {
		t.Fatalf("another host got the placeholder: %s %v", out, err)
	}
}

// A running hostd: a reload takes the secrets the config names, says
// which it left out (a value its store does not hold), and a policy set
// through it keeps the secrets the CLI wrote meanwhile.
func TestReloadSecretsAndPolicyKeepTheConfig(t *testing.T) {
	t.Setenv("COWORK_SECRET_STORE", "file")
	h := newHostdTest(t, machinetest.Guest{})
	r := h.start(t)
	r.until(controlwire.PhaseReady)
	store := secretstore.Open(h.paths.Dir())
	if err := store.Set(secretstore.File, "GH", "value-long-enough"); err != nil {
		t.Fatal(err)
	}
	_, err := instance.UpdateConfig(h.cfg.Name, func(c *instance.Config) error {
		c.Secrets = []instance.Secret{
			{Name: "GH", Host: "github.com:443", Mode: "authorization", Placeholder: "cowork-secret-00112233445566778899aabbccddeeff", Store: secretstore.File},
			{Name: "GONE", Host: "gitlab.com:443", Mode: "authorization", Placeholder: "cowork-secret-ffeeddccbbaa99887766554433221100", Store: secretstore.File},
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	// hostd has not reloaded: a policy set through it keeps what the CLI
	// wrote all the same.
	if err := r.api.SetPolicy(ctx, []byte(`{"mode":"allowlist","allow":["github.com"]}`)); err != nil {
		t.Fatal(err)
	}
	c, _ := instance.Load(h.cfg.Name)
	if len(c.Secrets) != 2 || c.Network.Mode != "allowlist" {
		t.Fatalf("the config after set_policy: secrets %+v, policy %+v", c.Secrets, c.Network.Policy)
	}
	rep, err := r.api.ReloadSecrets(ctx)
	if err != nil || rep.Booting || len(rep.LeftOut) != 1 || !strings.HasPrefix(rep.LeftOut[0], "GONE is left out") {
		t.Fatalf("reload: %+v %v", rep, err)
	}
	if strings.Contains(h.log.String(), "value-long-enough") {
		t.Fatal("hostd logged the value")
	}
}
