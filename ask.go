package cowork

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/claudecode"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/execwire"
)

// Credential is the API endpoint and secret a Claude Code session uses.
// They stay on the host: the guest gets a placeholder for the relay.
type Credential struct {
	Endpoint  string // "" means Anthropic's API
	APIKey    string // sent as x-api-key
	AuthToken string // sent as Authorization: Bearer
}

// HostCredential reads the credential from the environment of the command
// that starts the work: ANTHROPIC_BASE_URL, and ANTHROPIC_API_KEY or
// ANTHROPIC_AUTH_TOKEN (or CLAUDE_CODE_OAUTH_TOKEN).
func HostCredential(getenv func(string) string) (Credential, error) {
	c := Credential{Endpoint: getenv("ANTHROPIC_BASE_URL"), APIKey: getenv("ANTHROPIC_API_KEY")}
	if c.APIKey == "" {
		c.AuthToken = getenv("ANTHROPIC_AUTH_TOKEN")
		if c.AuthToken == "" {
			c.AuthToken = getenv("CLAUDE_CODE_OAUTH_TOKEN")
		}
	}
	if c.APIKey == "" && c.AuthToken == "" {
		return c, errors.New("no API credential: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) in cowork's environment; it stays on this machine, the sandbox gets a stand-in")
	}
	return c, nil
}

// CredentialFor is the credential a session of the instance cfg hands
// hostd: HostCredential for a guest on this machine; for one on a
// cluster, whose relay (in the namespace's egress proxy) uses the API
// key of the namespace's Secret, no key, so that this machine's never
// goes there, and ANTHROPIC_BASE_URL alone, any user or query in it
// redacted: the relay refuses an endpoint other than its own, rather
// than the CLI dropping it unsaid.
func CredentialFor(cfg *instance.Config, getenv func(string) string) (Credential, error) {
	if cfg.Remote() {
		var c Credential
		if base := getenv("ANTHROPIC_BASE_URL"); base != "" {
			c.Endpoint = policy.RedactURL(base)
		}
		return c, nil
	}
	return HostCredential(getenv)
}

// ForwardedVars are the Claude Code settings passed from the host's
// environment to claude in the guest. Credentials are not among them:
// those go through the relay.
var ForwardedVars = []string{
	"ANTHROPIC_MODEL", "ANTHROPIC_SMALL_FAST_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL",
	"ANTHROPIC_DEFAULT_SONNET_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL", "CLAUDE_CODE_SUBAGENT_MODEL",
	"CLAUDE_CODE_MAX_OUTPUT_TOKENS", "MAX_THINKING_TOKENS", "MAX_MCP_OUTPUT_TOKENS", "API_TIMEOUT_MS",
	"BASH_DEFAULT_TIMEOUT_MS", "BASH_MAX_TIMEOUT_MS", "DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING",
	"DISABLE_COST_WARNINGS", "DISABLE_NON_ESSENTIAL_MODEL_CALLS", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
	"CLAUDE_CODE_EFFORT_LEVEL",
}

// ForwardedEnv is KEY=VALUE for each forwarded variable set on the host.
func ForwardedEnv(getenv func(string) string) []string {
	var env []string
	for _, k := range ForwardedVars {
		if v := getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// projectRE is compiled on first use, not at every CLI start.
var projectRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`) })

// ValidateProject checks a project name: 1 to 64 of [A-Za-z0-9._-], not
// "." or "..", so it is always one folder under /workspace.
func ValidateProject(name string) error {
	if !projectRE().MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("project %q: use 1-64 letters, digits, '.', '_' or '-' (not . or ..)", name)
	}
	return nil
}

// ProjectDir is where Claude Code runs for a project ("" for /workspace).
func ProjectDir(project string) string {
	if project == "" {
		return "/workspace"
	}
	return path.Join("/workspace", project)
}

// ClaudeOptions is one run of Claude Code in the guest.
type ClaudeOptions struct {
	Project string // a folder of /workspace, made if missing
	// ExecID names Claude Code's exec in the audit log's owners
	// (agentclient.ExecOptions.ExecID); "" names it after the run's API
	// session, so that one id, the session's, finds both the run's API
	// calls (their records' session) and the flows of the processes under
	// its claude (their owners' exec): `cowork proxy --ask ID` (a session
	// id that is no exec id: a fresh id, never one the guest picks).
	ExecID string
	// OnSession, when set, is called with the run's API session id once
	// the session is open, before claude starts; Started with claude's
	// pid in the guest once it runs.
	OnSession func(id string)
	Started   func(pid int)
	// Args are Claude Code's options, passed verbatim.
	Args []string
	// AskPermissions keeps Claude Code's permission checks; by default they
	// are skipped (--dangerously-skip-permissions): the VM is the sandbox.
	AskPermissions bool
	Credential     Credential
	Env            []string // more KEY=VALUE for claude (ForwardedEnv)
	// Budget limits what this run may spend through the relay (zero: no
	// limit of its own; the instance's daily budget applies all the
	// same). OnUsage, when set, gets what it spent once it ended (not
	// from a hostd that does not say).
	Budget  Budget
	OnUsage func(*Usage)
	// what names the run in `cowork usage`: ask or claude.
	what string

	Stdin          io.Reader
	Stdout, Stderr io.Writer
	TTY            *agentclient.TerminalSize
	Resize         <-chan agentclient.TerminalSize
	Signals        <-chan syscall.Signal
}

// Claude runs `claude ARGS` in the guest as the default user (cowork) in
// the project's folder, with the credential behind the relay. Ask builds
// on it; `cowork claude` runs it on a terminal.
func (c *Client) Claude(ctx context.Context, o ClaudeOptions) (agentclient.ExitStatus, error) {
	dir := ProjectDir(o.Project)
	if err := o.Budget.Check(); err != nil {
		return agentclient.ExitStatus{}, err
	}
	if o.Project != "" {
		if err := ValidateProject(o.Project); err != nil {
			return agentclient.ExitStatus{}, err
		}
	}
	agent, err := c.Agent()
	if err != nil {
		return agentclient.ExitStatus{}, err
	}
	defer agent.Close()
	if st, err := agent.Exec(ctx, agentclient.ExecOptions{Argv: []string{"mkdir", "-p", dir}, Dir: "/"}); err != nil || st.Code != 0 {
		return agentclient.ExitStatus{}, fmt.Errorf("create %s in the guest: %v (exit %d)", dir, err, st.Code)
	}
	// The session lives while claude runs: it ends when this returns, or
	// with this process if it dies first.
	what := o.what
	if what == "" {
		what = "claude"
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sessionOpenWait)
	sess, err := c.OpenSessionWith(sctx, o.Credential.Endpoint, o.Credential.APIKey, o.Credential.AuthToken, SessionOptions{What: what, Budget: o.Budget})
	cancel()
	if err != nil {
		return agentclient.ExitStatus{}, &SessionError{Msg: err.Error()}
	}
	defer func() {
		sess.Close()
		if u := sess.Usage(); u != nil && o.OnUsage != nil {
			o.OnUsage(u)
		}
	}()
	execID := o.ExecID
	switch {
	case execID != "":
	case execwire.ValidExecID(sess.ID):
		execID = sess.ID
	default:
		// The host names the exec, never the guest: a session id that is
		// no exec id (an older hostd's) gets a fresh one.
		execID = agentclient.NewExecID()
	}
	if o.OnSession != nil {
		o.OnSession(sess.ID)
	}
	env := append([]string{"ANTHROPIC_BASE_URL=" + sess.BaseURL, "DISABLE_AUTOUPDATER=1"}, o.Env...)
	if o.Credential.AuthToken == "" { // an API key's, or a cluster's relay's
		env = append(env, "ANTHROPIC_API_KEY="+sess.Placeholder)
	} else {
		env = append(env, "ANTHROPIC_AUTH_TOKEN="+sess.Placeholder)
	}
	return agent.Exec(ctx, agentclient.ExecOptions{
		Argv: claudeArgv(o), Env: env, Dir: dir,
		Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr,
		TTY: o.TTY, Resize: o.Resize, Signals: o.Signals, Started: o.Started,
		// Claude Code's tools end with it: an interrupted task leaves no
		// command of it running (one whose shell exited first included).
		EndSession: true,
		ExecID:     execID,
	})
}

// sessionOpenWait bounds the wait for hostd to open an API session. hostd
// first connects to the endpoint, for up to netstack.EndpointCheckTimeout
// (10 s), and then refuses the session saying which endpoint and what to
// check: the wait is longer, so that a user whose network drops packets
// gets that answer, not a bare "context deadline exceeded".
const sessionOpenWait = 20 * time.Second

// SessionError is hostd refusing an API session (its endpoint cannot be
// reached, say): a fault on the host, before anything ran in the guest.
// Msg is hostd's own words: they say what to fix.
type SessionError struct{ Msg string }

func (e *SessionError) Error() string { return "open an API session: " + e.Msg }

// claudeArgv is the guest command that runs claude: through a login shell,
// so that the guest user's PATH finds it, and with permission checks
// skipped unless the caller keeps them (the VM is the sandbox).
func claudeArgv(o ClaudeOptions) []string {
	argv := []string{"bash", "-lc", `exec claude "$@"`, "claude"}
	if !o.AskPermissions {
		argv = append(argv, "--dangerously-skip-permissions")
	}
	return append(argv, o.Args...)
}

// AskOptions is one question to Claude Code, answered in print mode.
type AskOptions struct {
	ClaudeOptions
	Prompt string
	// Raw passes Claude Code's output through as it is (the caller chose its
	// --output-format); otherwise cowork asks for stream-json and hands each
	// event to OnEvent.
	Raw     bool
	OnEvent func(*claudecode.Event)
}

// Ask runs `claude -p` with the prompt on its stdin. Its exit status is
// claude's.
func (c *Client) Ask(ctx context.Context, o AskOptions) (agentclient.ExitStatus, error) {
	args := []string{"-p"}
	if !o.Raw {
		args = append(args, "--output-format", "stream-json", "--verbose", "--include-partial-messages")
	}
	o.Args = append(args, o.Args...)
	o.Stdin = strings.NewReader(o.Prompt)
	o.what = "ask"
	if o.Raw || o.OnEvent == nil {
		return c.Claude(ctx, o.ClaudeOptions)
	}
	pr, pw := io.Pipe()
	decoded := make(chan error, 1)
	go func() {
		decoded <- claudecode.Decode(pr, func(e *claudecode.Event) error { o.OnEvent(e); return nil })
		io.Copy(io.Discard, pr)
	}()
	o.Stdout = pw
	st, err := c.Claude(ctx, o.ClaudeOptions)
	pw.Close()
	<-decoded
	return st, err
}
