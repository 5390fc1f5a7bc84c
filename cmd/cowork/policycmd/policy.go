// Package policycmd is `cowork policy`: view and change what the guest may
// reach on the network.
package policycmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// Options is a parsed `cowork policy` command line: with no Action it
// shows the policy, else Action is the subcommand (allow, deny, mode...,
// suggest, apply, learn) and Args what it was given (learn: the command).
type Options struct {
	IO     *iostreams.IOStreams
	Name   string
	JSON   bool
	Action string
	Args   []string

	// suggest: the period (zero: unbounded) and the proposal's shape.
	Since, Until time.Time
	Top          int
	Group, Prune bool

	// apply: the policy file ("-": stdin), and no question.
	From string
	Yes  bool

	// learn: how long (0: until the command in Args ends, or Ctrl-C).
	For time.Duration
}

// NewCmdPolicy builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdPolicy(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	exec := func(cmd *cobra.Command, action string, args []string) error {
		o.Name, o.Action, o.Args = *name, action, args
		if runF != nil {
			return runF(o)
		}
		return run(cmd.Context(), o)
	}
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Show or change what the sandbox may reach on the network",
		Long: `Show or change the guest's network policy. Changes apply at once to a running
instance (to new connections) and are kept in the instance's config.

By default the guest reaches the internet but not private networks: the host's
loopback and LANs, RFC 1918, CGNAT, ULA, link-local (with 169.254.169.254) and
multicast. In allowlist mode it reaches only what is listed. Entries are
domains (example.com matches that name; *.example.com any name under it),
addresses or CIDRs. A domain covers only the addresses its DNS answers gave
the guest, so an IP literal does not get around it, and an allowed name that
resolves to a private address is still denied unless that address is allowed
by CIDR. The deny list always wins. Host loopback ports are reachable only
when exposed, at host.cowork.internal (192.168.127.254) on the same port.`,
		Example: `  cowork policy
  cowork policy mode allowlist
  cowork policy allow api.anthropic.com '*.github.com' registry.npmjs.org
  cowork policy deny tracker.example.com 203.0.113.0/24
  cowork policy remove '*.github.com'
  cowork policy expose 5432
  cowork policy reset
  cowork policy suggest --since 1h > proposal.txt
  cowork policy apply --from proposal.txt
  cowork policy learn -- npm ci > proposal.txt`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return exec(cmd, "", nil) },
	}
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print as JSON")

	change := func(use, short, example string, args cobra.PositionalArgs) *cobra.Command {
		return &cobra.Command{
			Use:     use,
			Short:   short,
			Example: example,
			Args:    args,
			RunE:    func(cmd *cobra.Command, args []string) error { return exec(cmd, cmd.Name(), args) },
		}
	}
	atLeastOne := func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmdutil.FlagErrorf("cowork policy %s needs at least one entry", cmd.Name())
		}
		return nil
	}
	cmd.AddCommand(
		change("mode default|allowlist", "Set the mode: the internet (default), or only what is allowed", "  cowork policy mode allowlist",
			func(cmd *cobra.Command, args []string) error {
				if len(args) != 1 || (args[0] != policy.ModeDefault && args[0] != policy.ModeAllowlist) {
					return cmdutil.FlagErrorf("cowork policy mode takes default or allowlist")
				}
				return nil
			}),
		change("allow ENTRY...", "Allow domains, addresses or CIDRs", "  cowork policy allow api.anthropic.com '*.github.com' 198.51.100.0/24", atLeastOne),
		change("deny ENTRY...", "Deny domains, addresses or CIDRs (the deny list always wins)", "  cowork policy deny tracker.example.com", atLeastOne),
		change("remove ENTRY...", "Take entries off the allow and deny lists", "  cowork policy remove '*.github.com'", atLeastOne),
		change("expose PORT...", "Let the guest reach host loopback ports at host.cowork.internal", "  cowork policy expose 5432 6379", atLeastOne),
		change("unexpose PORT...", "Stop exposing host loopback ports", "  cowork policy unexpose 5432", atLeastOne),
		change("reset", "Go back to the default policy", "  cowork policy reset", cmdutil.NoArgs),
		newCmdSuggest(o, exec),
		newCmdApply(o, exec),
		newCmdLearn(o, exec),
		newCmdBudget(exec),
	)
	return cmd
}

// edit does to p what the subcommand action says with its arguments.
func edit(p *policy.Policy, action string, args []string) error {
	switch action {
	case "mode":
		if len(args) != 1 {
			return cmdutil.FlagErrorf("cowork policy mode takes default or allowlist")
		}
		p.Mode = args[0]
	case "allow":
		return add(&p.Allow, args)
	case "deny":
		return add(&p.Deny, args)
	case "remove":
		for _, a := range args {
			n := len(p.Allow) + len(p.Deny)
			p.Allow = slices.DeleteFunc(p.Allow, func(e string) bool { return e == a })
			p.Deny = slices.DeleteFunc(p.Deny, func(e string) bool { return e == a })
			if n == len(p.Allow)+len(p.Deny) {
				return cmdutil.FlagErrorf("%q is on neither list; see `cowork policy`", a)
			}
		}
	case "expose":
		for _, a := range args {
			port, err := strconv.Atoi(a)
			if err != nil || port < 1 || port > 65535 {
				return cmdutil.FlagErrorf("port %q: want 1 to 65535", a)
			}
			if !slices.Contains(p.HostPorts, port) {
				p.HostPorts = append(p.HostPorts, port)
			}
		}
	case "unexpose":
		for _, a := range args {
			port, _ := strconv.Atoi(a)
			if !slices.Contains(p.HostPorts, port) {
				return cmdutil.FlagErrorf("port %q is not exposed", a)
			}
			p.HostPorts = slices.DeleteFunc(p.HostPorts, func(x int) bool { return x == port })
		}
	case "budget":
		return editBudget(p, args)
	case "reset":
		*p = policy.Policy{}
	default:
		return fmt.Errorf("cowork policy has no %q; see `cowork policy --help`", action)
	}
	return nil
}

// run shows the policy, or changes it as o.Action says. An instance on a
// cluster has none of its own: every action refuses it first, before a
// file or stdin is read.
func run(ctx context.Context, o *Options) error {
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	if err := inst.LocalOnly(cowork.OpPolicy); err != nil {
		return err
	}
	switch o.Action {
	case "suggest":
		return runSuggest(ctx, o)
	case "apply":
		return runApply(ctx, o)
	case "learn":
		return runLearn(ctx, o)
	}
	if o.Action != "" {
		return update(ctx, o.IO, o.Name, func(p *policy.Policy) error { return edit(p, o.Action, o.Args) })
	}
	p := inst.Config.Network.Policy
	if o.JSON {
		if p.Mode == "" {
			p.Mode = policy.ModeDefault // explicit, for policy apply
		}
		enc := json.NewEncoder(o.IO.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	for _, line := range p.Describe() {
		fmt.Fprintln(o.IO.Out, line)
	}
	return nil
}

// add appends entries, checking each.
func add(list *[]string, entries []string) error {
	for _, e := range entries {
		if _, _, err := policy.ParseEntry(e); err != nil {
			return &cmdutil.FlagError{Err: err}
		}
		if !slices.Contains(*list, e) {
			*list = append(*list, e)
		}
	}
	return nil
}

// update applies edit to the instance's policy: through hostd when it runs
// (which applies and saves it), else in the config directly.
func update(ctx context.Context, ios *iostreams.IOStreams, name string, edit func(*policy.Policy) error) error {
	inst, err := cowork.Open(name)
	if err != nil {
		return err
	}
	p := inst.Config.Network.Policy
	p.Allow, p.Deny, p.HostPorts = slices.Clone(p.Allow), slices.Clone(p.Deny), slices.Clone(p.HostPorts)
	if err := edit(&p); err != nil {
		return err
	}
	applied, err := inst.SetPolicy(ctx, p)
	var invalid *cowork.InvalidPolicyError
	switch {
	case errors.As(err, &invalid):
		return &cmdutil.FlagError{Err: err}
	case err != nil:
		return err
	case applied:
		fmt.Fprintf(ios.ErrOut, "applied to %s\n", name)
	default:
		fmt.Fprintf(ios.ErrOut, "saved; %s is stopped and starts with it\n", name)
	}
	for _, line := range p.Describe() {
		fmt.Fprintln(ios.Out, line)
	}
	return nil
}
