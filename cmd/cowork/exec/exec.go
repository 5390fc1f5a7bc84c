// Package exec is `cowork exec`: run a command in the guest with its stdio
// streamed and its exit code returned.
package exec

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/guestrun"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/throwaway"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/internal/shquote"
)

// DefaultWorkdir is where commands run unless told otherwise: the share.
const DefaultWorkdir = "/workspace"

// Options is a parsed `cowork exec` command line.
type Options struct {
	IO      *iostreams.IOStreams
	Connect func() (*agentclient.Client, error)
	// Instance is the instance (global --name), which --rm clones;
	// Agent says the agent was named directly (--agent, $COWORK_AGENT).
	Instance string
	Agent    bool

	Command []string
	Workdir string
	User    string
	Env     []string
	TTY     bool
	NoShell bool
	// Rm runs in a throwaway clone of the instance's snapshot Snapshot
	// ("" for its pool's or latest).
	Rm       bool
	Snapshot string
	// Verbose prints the exec's id on stderr: the id of its flows in the
	// audit log (cowork proxy --exec).
	Verbose bool
}

// NewCmdExec builds the command; target is the global --name and
// --agent; runF replaces the run step in tests.
func NewCmdExec(ios *iostreams.IOStreams, target *cmdutil.AgentTarget, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios, Connect: target.Connect}
	cmd := &cobra.Command{
		Use:   "exec [flags] COMMAND [ARG...]",
		Short: "Run a command in the sandbox",
		Long: `Run a command in the sandbox and stream its output.

The command runs through the guest's login shell (bash -lc) in /workspace,
as the default user (cowork), so PATH and the toolchain are what an
interactive shell sees. A single argument is taken as a shell script; several
arguments are quoted and joined, so both styles work. stdout and stderr stay
separate, stdin is forwarded, and cowork exits with the command's exit code.

With --rm the command runs in a throwaway clone of the instance, deleted
when it ends: only what it writes to /workspace stays. The clone is made
from the instance's latest snapshot (--snapshot chooses one; an instance
with none that is stopped gets one, named base), or taken ready from its
pool (cowork pool fill keeps one suspended, resumed in under a second).
The clone's network records and a line for the run go to the instance's
runs.jsonl (cowork proxy --runs). An instance on a cluster has no
snapshots and no pool: it must be stopped, its disk is cloned in the
cluster for the run, and nothing of the clone stays, /workspace included
(it is the clone's own disk); its traffic is in the namespace's egress
proxy's audit log.`,
		Example: `  cowork exec "python3 --version"
  cowork exec ls -la /workspace
  cowork exec -w /tmp -e DEBUG=1 -- make test
  echo 'print(42)' | cowork exec python3 -
  cowork exec --no-shell -- /usr/bin/env
  cowork exec --rm -- "curl -sI https://example.com"`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmdutil.FlagErrorf("cowork exec needs a COMMAND to run, e.g. cowork exec \"python3 --version\"")
			}
			o.Command = args
			env, err := parseEnv(o.Env)
			if err != nil {
				return err
			}
			o.Env = env
			o.Instance = target.Instance
			o.Agent = target.Address != "" || os.Getenv(cmdutil.AgentEnv) != ""
			if o.Snapshot != "" && !o.Rm {
				return cmdutil.FlagErrorf("--snapshot chooses what --rm clones; add --rm, or drop --snapshot")
			}
			if o.Rm && o.Agent {
				return cmdutil.FlagErrorf("--rm clones an instance, and --agent (or $%s) names an agent instead; drop one", cmdutil.AgentEnv)
			}
			if o.TTY && !o.IO.IsStdinTTY() {
				return cmdutil.FlagErrorf("--tty needs a terminal on stdin; drop --tty to pipe input")
			}
			if runF != nil {
				return runF(o)
			}
			return run(cmd.Context(), o)
		},
	}
	cmd.Flags().SetInterspersed(false) // flags after COMMAND belong to it
	cmd.Flags().StringVarP(&o.Workdir, "workdir", "w", DefaultWorkdir, "working directory in the guest")
	cmd.Flags().StringVarP(&o.User, "user", "u", "", "guest user to run as (default: the agent's default user, cowork)")
	cmd.Flags().StringArrayVarP(&o.Env, "env", "e", nil, "set KEY=VALUE in the command's environment (KEY alone copies it from here); repeatable")
	cmd.Flags().BoolVarP(&o.TTY, "tty", "t", false, "run on a pseudo-terminal (for full-screen programs)")
	cmd.Flags().BoolVar(&o.NoShell, "no-shell", false, "run COMMAND directly instead of through bash -lc")
	cmd.Flags().BoolVarP(&o.Verbose, "verbose", "v", false, "print the exec's id on stderr, for cowork proxy --exec ID")
	cmd.Flags().BoolVar(&o.Rm, "rm", false, "run in a throwaway clone of the instance, deleted afterwards")
	cmd.Flags().StringVar(&o.Snapshot, "snapshot", "", "with --rm, clone the instance's snapshot `NAME` (default: its pool's, or its latest)")
	return cmd
}

func run(ctx context.Context, o *Options) error {
	argv := Argv(o.Command, o.NoShell)
	id := agentclient.NewExecID()
	if o.Verbose {
		fmt.Fprintf(o.IO.ErrOut, "cowork: exec id %s (its traffic: cowork proxy --exec %s)\n", id, id)
	}
	runIn := func(ctx context.Context, connect func() (*agentclient.Client, error)) error {
		client, err := connect()
		if err != nil {
			return err
		}
		defer client.Close()
		return guestrun.Run(ctx, o.IO, client, guestrun.Options{Argv: argv, Env: o.Env, Dir: o.Workdir, User: o.User, TTY: o.TTY, ExecID: id})
	}
	if !o.Rm {
		return runIn(ctx, o.Connect)
	}
	to := throwaway.Options{Parent: o.Instance, Snapshot: o.Snapshot, What: "exec", Command: strings.Join(o.Command, " ")}
	return throwaway.Run(ctx, o.IO, to, func(ctx context.Context, clone *cowork.Instance) error {
		return runIn(ctx, clone.Agent)
	})
}

// Argv is what runs in the guest for a command line: the words themselves
// with noShell, else a login shell running them as a script.
func Argv(words []string, noShell bool) []string {
	if noShell {
		return words
	}
	script := words[0]
	if len(words) > 1 {
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = shquote.Quote(w)
		}
		script = strings.Join(quoted, " ")
	}
	return []string{"bash", "-lc", script}
}

// parseEnv checks KEY=VALUE entries and fills KEY-only ones from the host.
func parseEnv(entries []string) ([]string, error) {
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		k, _, hasValue := strings.Cut(e, "=")
		if k == "" || strings.ContainsAny(k, " \t\n") {
			return nil, cmdutil.FlagErrorf("--env %q: want KEY=VALUE or KEY", e)
		}
		if !hasValue {
			v, ok := os.LookupEnv(k)
			if !ok {
				continue // like docker: an unset KEY is left unset
			}
			e = k + "=" + v
		}
		out = append(out, e)
	}
	return out, nil
}
