package cowork

import (
	"slices"
	"strings"
	"testing"
)

// env is a fake host environment for the getenv-taking functions.
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestForwardedEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		host []string
		want []string
	}{
		{"nothing set", nil, nil},
		{"Claude Code settings pass",
			[]string{"ANTHROPIC_MODEL", "claude-x", "DISABLE_TELEMETRY", "1", "CLAUDE_CODE_MAX_OUTPUT_TOKENS", "999"},
			// In ForwardedVars' order, whatever the host's.
			[]string{"ANTHROPIC_MODEL=claude-x", "CLAUDE_CODE_MAX_OUTPUT_TOKENS=999", "DISABLE_TELEMETRY=1"}},
		{"credentials and the endpoint go through the relay, not the environment",
			[]string{"ANTHROPIC_API_KEY", "sk-real", "ANTHROPIC_AUTH_TOKEN", "tok", "CLAUDE_CODE_OAUTH_TOKEN", "oauth",
				"ANTHROPIC_BASE_URL", "http://127.0.0.1:1", "ANTHROPIC_MODEL", "m"},
			[]string{"ANTHROPIC_MODEL=m"}},
		{"the host's own variables stay", []string{"PATH", "/usr/bin", "HOME", "/Users/me", "HTTPS_PROXY", "http://p"}, nil},
		{"an empty value is unset", []string{"ANTHROPIC_MODEL", ""}, nil},
	} {
		if got := ForwardedEnv(env(tc.host...)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	for _, k := range ForwardedVars {
		if strings.Contains(k, "KEY") || (strings.Contains(k, "TOKEN") && !strings.HasSuffix(k, "_TOKENS")) || k == "ANTHROPIC_BASE_URL" {
			t.Errorf("%s is forwarded into the guest: a credential or endpoint must go through the relay", k)
		}
	}
}

func TestHostCredential(t *testing.T) {
	for _, tc := range []struct {
		name string
		host []string
		want Credential
		err  bool
	}{
		{"an API key", []string{"ANTHROPIC_API_KEY", "sk"}, Credential{APIKey: "sk"}, false},
		{"the endpoint with it", []string{"ANTHROPIC_API_KEY", "sk", "ANTHROPIC_BASE_URL", "http://h:1"}, Credential{Endpoint: "http://h:1", APIKey: "sk"}, false},
		{"an auth token", []string{"ANTHROPIC_AUTH_TOKEN", "tok"}, Credential{AuthToken: "tok"}, false},
		{"an OAuth token", []string{"CLAUDE_CODE_OAUTH_TOKEN", "oauth"}, Credential{AuthToken: "oauth"}, false},
		{"the API key wins over a token", []string{"ANTHROPIC_API_KEY", "sk", "ANTHROPIC_AUTH_TOKEN", "tok", "CLAUDE_CODE_OAUTH_TOKEN", "oauth"}, Credential{APIKey: "sk"}, false},
		{"ANTHROPIC_AUTH_TOKEN wins over the OAuth token", []string{"ANTHROPIC_AUTH_TOKEN", "tok", "CLAUDE_CODE_OAUTH_TOKEN", "oauth"}, Credential{AuthToken: "tok"}, false},
		{"an empty key is unset", []string{"ANTHROPIC_API_KEY", "", "ANTHROPIC_AUTH_TOKEN", "tok"}, Credential{AuthToken: "tok"}, false},
		{"nothing", nil, Credential{}, true},
		{"an endpoint is no credential", []string{"ANTHROPIC_BASE_URL", "http://h:1"}, Credential{}, true},
	} {
		got, err := HostCredential(env(tc.host...))
		if (err != nil) != tc.err || !tc.err && got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v (error %v)", tc.name, got, err, tc.want, tc.err)
		}
		if err != nil && !strings.Contains(err.Error(), "set ANTHROPIC_API_KEY") {
			t.Errorf("%s: the error does not say what to set: %v", tc.name, err)
		}
	}
}

func TestClaudeArgvSkipsPermissionsUnlessAsked(t *testing.T) {
	args := []string{"--model", "opus", "-c"}
	got := claudeArgv(ClaudeOptions{Args: args})
	want := []string{"bash", "-lc", `exec claude "$@"`, "claude", "--dangerously-skip-permissions", "--model", "opus", "-c"}
	if !slices.Equal(got, want) {
		t.Errorf("by default: %q, want %q", got, want)
	}
	got = claudeArgv(ClaudeOptions{Args: args, AskPermissions: true})
	if slices.Contains(got, "--dangerously-skip-permissions") || !slices.Equal(got[len(got)-3:], args) {
		t.Errorf("with AskPermissions: %q", got)
	}
}
