// Package ask is `cowork ask` (Claude Code in print mode) and `cowork
// claude` (interactive), in the guest, with every Claude Code flag
// forwarded.
package ask

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/guestrun"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/throwaway"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/claudecode"
)

// Options is a parsed `cowork ask` command line.
type Options struct {
	IO       *iostreams.IOStreams
	Instance string

	Project        string
	AskPermissions bool
	ClaudeArgs     []string // verbatim
	Prompt         string
	Raw            bool // the user chose --output-format
	Deprecated     string
	Rm             bool // in a throwaway clone
	// Budget is --max-tokens-total and --max-cost: what the run may
	// spend through the relay.
	Budget cowork.Budget
}

// ownFlags are cowork's own options of ask and claude; everything else is
// Claude Code's.
var ownFlags = []claudecode.Flag{
	{Long: "--project", Arity: claudecode.RequiredValue, Value: "<name>", Help: "work in /workspace/NAME (made if missing); 1-64 of [A-Za-z0-9._-]"},
	{Long: "--no-skip-permissions", Help: "keep Claude Code's permission checks (by default they are skipped: the VM is the sandbox)"},
	{Long: "--instance", Arity: claudecode.RequiredValue, Value: "<name>", Help: "the instance to use, like cowork --name NAME ask (after ask, -n/--name is Claude Code's session name)"},
	{Long: "--rm", Help: "ask: run in a throwaway clone of the instance, deleted afterwards (only /workspace keeps what it wrote; see cowork exec --help)"},
	{Long: "--max-tokens-total", Arity: claudecode.RequiredValue, Value: "<n>", Help: "refuse the run's API calls once its answers have counted N tokens (input, output and cache; 200000, 200k, 2M)"},
	{Long: "--max-cost", Arity: claudecode.RequiredValue, Value: "<usd>", Help: "refuse the run's API calls once they have cost USD dollars at cowork's prices (see cowork usage --help)"},
	{Long: "--help", Short: "-h", Help: "show this help"},
}

// NewCmdAsk builds the command; name is the global --name.
func NewCmdAsk(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ask [flags] PROMPT",
		Short: "Ask Claude Code, non-interactively, in the sandbox",
		Long: `Run Claude Code in print mode (claude -p) in the guest, as user cowork, in
/workspace (or /workspace/NAME with --project), with permission checks skipped
(the VM is the sandbox; --no-skip-permissions keeps them). The answer streams
as it comes: text, one line per tool call, failed tool results marked, and a
footer with duration, turns, cost and session id. An --output-format you give
is passed through raw instead.

The prompt is the argument, or stdin when it is - or absent (and stdin is not
a terminal). -c/--continue goes on with the project's latest conversation,
-r/--resume ID with a given one; conversations live in the guest's home and
survive restarts. Every Claude Code flag below is forwarded as given.

The exit code is claude's, except that a run whose result is an error exits
1 (130 after Ctrl-C) even where claude exits 0. Ctrl-C interrupts claude in
the guest; a second one kills it.

--max-tokens-total N and --max-cost USD limit what the run spends: the
relay counts every answer's tokens (input, output, cache writes and reads)
and prices them, and once a limit is reached it refuses the run's next
API calls with an error Claude Code shows ("API Error: 402 cowork: the
budget of ... is reached"). Near a limit the calls go one at a time, so
none goes out once it is spent; the last answer may take the total past
it. The instance's daily budget (cowork policy budget) applies too. A line
on stderr says what the run spent; cowork usage shows the totals.

The API credential is ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) and the
endpoint ANTHROPIC_BASE_URL, from cowork's own environment: they stay on this
machine, the guest gets a one-session stand-in for the relay. These are also
passed to claude when set: ` + strings.Join(cowork.ForwardedVars, ", ") + `.

-p NAME "PROMPT", the old cowork spelling of --project, still works (with a
warning) in that shape only: a project name, then one quoted prompt of more
than one word (or none, with the prompt piped on stdin), and no --project.
Any other -p is Claude Code's --print, which ask always uses anyway, and the
words after it are the prompt: cowork ask -p fix the bug asks "fix the bug".

The instance is chosen before the subcommand: cowork --name dev ask "hi".
After ask, -n/--name is Claude Code's session name; --instance NAME chooses
the instance there.`,
		Example: `  cowork ask "write a python hello world program"
  cowork ask -c "add error handling"
  cowork ask --project myapp "create a flask app"
  cowork ask --model opus --max-budget-usd 1.0 "a complex task"
  cowork ask --max-tokens-total 2M --max-cost 5 "refactor the parser"
  git diff | cowork ask "review this change"
  cowork ask --output-format json "list the files" | jq -r .result`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := Parse(ios, *name, args)
			if errors.Is(err, ErrHelp) {
				fmt.Fprint(ios.Out, Help(cmd))
				return nil
			}
			if err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return run(cmd.Context(), o)
		},
	}
	// `cowork help ask` and `cowork --help ask` list Claude Code's flags too.
	cmd.SetHelpFunc(func(cmd *cobra.Command, _ []string) { fmt.Fprint(ios.Out, Help(cmd)) })
	return cmd
}

// ErrHelp is Parse's answer to -h/--help.
var ErrHelp = errors.New("help")

// ParseInteractive reads a `cowork claude` command line: the same flags as
// ask; a prompt is optional and passed on to claude.
func ParseInteractive(ios *iostreams.IOStreams, instance string, args []string) (*Options, error) {
	o := &Options{IO: ios, Instance: instance}
	p, err := o.parseOwn(args)
	if err != nil {
		return nil, err
	}
	if o.Rm {
		return nil, cmdutil.FlagErrorf("--rm is cowork ask's: an interactive session in a throwaway clone would lose its conversation; use cowork ask --rm PROMPT")
	}
	o.ClaudeArgs = p.Claude
	if len(p.Positional) > 0 {
		o.ClaudeArgs = append(append(o.ClaudeArgs, "--"), p.Positional...)
	}
	return o, nil
}

// parseOwn splits args into cowork's own flags, which it applies to o,
// and Claude Code's, which it returns with the positional arguments.
func (o *Options) parseOwn(args []string) (*claudecode.Parsed, error) {
	return o.parseFlags(args, ownFlags)
}

// parseFlags is parseOwn with own as cowork's flags (fleet ask has its
// own set, less --rm).
func (o *Options) parseFlags(args []string, own []claudecode.Flag) (*claudecode.Parsed, error) {
	p, err := claudecode.ParseArgs(args, own)
	if err != nil {
		return nil, &cmdutil.FlagError{Err: err}
	}
	if _, ok := p.Own["--help"]; ok {
		return nil, ErrHelp
	}
	if v := p.Own["--project"]; len(v) > 0 {
		o.Project = v[len(v)-1]
	}
	if v := p.Own["--instance"]; len(v) > 0 {
		o.Instance = v[len(v)-1]
	}
	_, o.AskPermissions = p.Own["--no-skip-permissions"]
	_, o.Rm = p.Own["--rm"]
	if err := o.parseBudget(p.Own); err != nil {
		return nil, err
	}
	if o.Project != "" {
		if err := cowork.ValidateProject(o.Project); err != nil {
			return nil, &cmdutil.FlagError{Err: err}
		}
	}
	return p, nil
}

// Parse reads an ask command line.
func Parse(ios *iostreams.IOStreams, instance string, args []string) (*Options, error) {
	o := &Options{IO: ios, Instance: instance}
	args, o.Project, o.Deprecated = deprecatedProject(args, ios.IsStdinTTY())
	p, err := o.parseOwn(args)
	if err != nil {
		return nil, err
	}
	o.ClaudeArgs = p.Claude
	o.Raw = p.Given["--output-format"]
	o.Prompt = strings.Join(p.Positional, " ")
	if o.Prompt == "" || o.Prompt == "-" {
		hint := ""
		if v := p.TrailingVariadic; v != "" && len(p.Positional) == 0 {
			hint = fmt.Sprintf("; %s takes every argument after it, so put the prompt first or end its list with --", v)
		}
		if ios.IsStdinTTY() || ios.In == nil {
			return nil, cmdutil.FlagErrorf("cowork ask needs a prompt: cowork ask \"write hello world\" (or pipe it on stdin)%s", hint)
		}
		b, err := io.ReadAll(ios.In)
		if err != nil {
			return nil, err
		}
		o.Prompt = strings.TrimSpace(string(b))
		if o.Prompt == "" {
			return nil, cmdutil.FlagErrorf("cowork ask read an empty prompt from stdin%s", hint)
		}
	}
	return o, nil
}

// deprecatedProject takes the seed's `-p PROJECT "PROMPT"` out of args. It
// is told from Claude Code's -p (print) by its shape, which the seed's
// README always used: a project name, then exactly one argument with a
// space in it (a quoted prompt) or none with the prompt piped on stdin, and
// no --project. Unquoted words (-p fix the bug) or a one-word prompt are
// Claude Code's -p and a prompt: misreading those would run claude in a
// made-up folder with half the prompt.
func deprecatedProject(args []string, stdinTTY bool) (rest []string, project, warning string) {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--" {
			break
		}
		if args[i] != "-p" {
			continue
		}
		name := args[i+1]
		if strings.HasPrefix(name, "-") || cowork.ValidateProject(name) != nil {
			return args, "", ""
		}
		after := append(append([]string(nil), args[:i]...), args[i+2:]...)
		p, err := claudecode.ParseArgs(after, ownFlags)
		if err != nil || len(p.Own["--project"]) > 0 {
			return args, "", ""
		}
		switch len(p.Positional) {
		case 0:
			if stdinTTY {
				return args, "", "" // "-p hello": Claude Code's print, with the prompt "hello"
			}
		case 1:
			if !strings.ContainsAny(p.Positional[0], " \t\n") {
				return args, "", "" // "-p say hi": print, the prompt "say hi"
			}
		default:
			return args, "", "" // "-p fix the bug": print, the prompt "fix the bug"
		}
		return after, name, fmt.Sprintf("cowork: -p %s is deprecated; use --project %s (see cowork ask --help for how -p is read)", name, name)
	}
	return args, "", ""
}

func run(ctx context.Context, o *Options) error {
	if o.Deprecated != "" {
		fmt.Fprintln(o.IO.ErrOut, o.Deprecated)
	}
	if !o.Rm {
		inst, err := open(o)
		if err != nil {
			return err
		}
		cred, err := cowork.CredentialFor(inst.Config, os.Getenv)
		if err != nil {
			return err
		}
		return o.askIn(ctx, inst, cred)
	}
	// A parent on a cluster has its clones there, asking through the
	// namespace's relay: no key of this machine's.
	parent, err := cowork.Open(o.Instance)
	if err != nil {
		return err
	}
	cred, err := cowork.CredentialFor(parent.Config, os.Getenv)
	if err != nil {
		return err
	}
	to := throwaway.Options{Parent: o.Instance, What: "ask", Command: o.Prompt}
	return throwaway.Run(ctx, o.IO, to, func(ctx context.Context, clone *cowork.Instance) error {
		return o.askIn(ctx, clone, cred)
	})
}

// askIn asks Claude Code in inst.
func (o *Options) askIn(ctx context.Context, inst *cowork.Instance, cred cowork.Credential) error {
	c, err := inst.Client()
	if err != nil {
		return err
	}
	defer c.Close()
	r := newRenderer(o.IO)
	var id atomic.Pointer[string] // the run's: its API session's, and its exec's
	ao := cowork.AskOptions{
		ClaudeOptions: cowork.ClaudeOptions{
			Project: o.Project, Args: o.ClaudeArgs, AskPermissions: o.AskPermissions,
			Credential: cred, Env: cowork.ForwardedEnv(os.Getenv),
			Budget: o.Budget, OnUsage: func(u *cowork.Usage) { PrintUsage(o.IO.ErrOut, u) },
			OnSession: func(s string) { id.Store(&s) },
		},
		Prompt: o.Prompt,
		Raw:    o.Raw,
	}
	var claudePID atomic.Int64
	ao.Started = func(pid int) { claudePID.Store(int64(pid)) }
	tools := newToolCalls()
	if !o.Raw {
		ao.OnEvent = func(e *claudecode.Event) {
			r.Event(e)
			tools.Event(e)
		}
	}
	eo := agentclient.ExecOptions{Stdin: strings.NewReader("")} // the prompt goes in by Ask
	started := time.Now()
	defer func() {
		s := id.Load()
		if s == nil {
			return // no session, nothing ran
		}
		end := time.Now()
		recordToolCalls(ctx, o.IO.ErrOut, c, *s, tools.export(end))
		byTool := tools.tally(*s, int(claudePID.Load()), end)
		if line := netSummary(ctx, inst.Paths.NetworkLog(), *s, started, byTool.add); line != "" {
			fmt.Fprintln(o.IO.ErrOut, "cowork: "+line)
		}
		if line := byTool.line(); line != "" {
			fmt.Fprintln(o.IO.ErrOut, "cowork: "+line)
		}
	}()
	return guestrun.Attach(ctx, o.IO, false, &eo, func(ctx context.Context) (agentclient.ExitStatus, error) {
		var interrupted atomic.Bool
		ao.Stdout, ao.Stderr = eo.Stdout, eo.Stderr
		ao.Signals = noteInterrupts(ctx, eo.Signals, &interrupted)
		st, err := c.Ask(ctx, ao)
		cut := interrupted.Load()
		r.Finish(cut && !o.Raw)
		// Raw output is not read, so its result is not known: taken as given.
		st.Code = resultCode(st.Code, r.Failed(), r.Ended() || o.Raw, cut)
		return st, err
	})
}

// Connect reads the host's credential and reaches the instance's hostd,
// warning when its workspace folder is gone: what ask and claude both need
// before claude can run.
func Connect(o *Options) (*cowork.Client, cowork.Credential, error) {
	inst, err := open(o)
	if err != nil {
		return nil, cowork.Credential{}, err
	}
	cred, err := cowork.CredentialFor(inst.Config, os.Getenv)
	if err != nil {
		return nil, cred, err
	}
	c, err := inst.Client()
	return c, cred, err
}

// open opens the instance, warning when its workspace folder is gone.
func open(o *Options) (*cowork.Instance, error) {
	inst, err := cowork.Open(o.Instance)
	if err != nil {
		return nil, err
	}
	cmdutil.WarnMissingWorkspace(o.IO.ErrOut, inst)
	return inst, nil
}

// resultCode is ask's exit code: claude's, except that claude exits 0 even
// when its result is an error (after an interrupted tool, for one), which a
// script must not take for success: 1 then, or 130 after Ctrl-C. A Ctrl-C
// that ended claude before it gave a result (ended false) counts as such
// an error.
func resultCode(claude int, failed, ended, interrupted bool) int {
	failed = failed || interrupted && !ended
	switch {
	case claude != 0 || !failed:
		return claude
	case interrupted:
		return 130
	}
	return 1
}

// noteInterrupts passes signals on and notes a Ctrl-C among them.
func noteInterrupts(ctx context.Context, in <-chan syscall.Signal, interrupted *atomic.Bool) <-chan syscall.Signal {
	out := make(chan syscall.Signal, 4)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-in:
				if s == syscall.SIGINT || s == syscall.SIGKILL {
					interrupted.Store(true)
				}
				select {
				case out <- s:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// Help is ask's (and claude's) help: cobra's, plus Claude Code's flags.
func Help(cmd *cobra.Command) string { return help(cmd, ownFlags) }

// FleetHelp is fleet ask's help: cobra's, plus Claude Code's flags.
func FleetHelp(cmd *cobra.Command) string { return help(cmd, fleetFlags) }

func help(cmd *cobra.Command, own []claudecode.Flag) string {
	var b strings.Builder
	b.WriteString(cmd.Long + "\n\nUsage:\n  " + cmd.UseLine() + "\n\nExamples:\n" + cmd.Example + "\n\ncowork flags:\n")
	for _, f := range own {
		fmt.Fprintf(&b, "  %-40s %s\n", f.Usage(), f.Help)
	}
	fmt.Fprintf(&b, "\nClaude Code flags (Claude Code %s; forwarded as given):\n", claudecode.Version)
	for _, f := range claudecode.Flags {
		if f.Long == "--help" {
			continue
		}
		fmt.Fprintf(&b, "  %-40s %s\n", f.Usage(), firstSentence(f.Help))
	}
	return b.String()
}

func firstSentence(s string) string {
	if i := strings.Index(s, ". "); i > 0 {
		s = s[:i+1]
	}
	return firstLine(s, 90)
}
