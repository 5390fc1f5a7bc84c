package policycmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

func newCmdApply(o *Options, exec func(*cobra.Command, string, []string) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "apply --from FILE|-",
		Short: "Replace the policy with one from a file, after showing the difference",
		Long: `Replace the instance's whole policy with the one in FILE (- for stdin): a
policy file as cowork policy suggest writes it (mode:, allow, deny and host
port lines; # starts a comment), or JSON as cowork policy --json or
cowork policy suggest --json prints it. Either must say its mode. The file is
checked first; a bad one changes nothing.

The difference from the current policy is shown as a unified diff, then
cowork asks on a terminal; without one (a script, stdin used for the file)
it needs --yes. If the policy changed meanwhile, nothing is applied: run
again to see the new difference. A running instance takes the policy at once (for new
connections) and saves it; a stopped one keeps it for its next start.`,
		Example: `  cowork policy suggest --since 1h > proposal.txt
  $EDITOR proposal.txt
  cowork policy apply --from proposal.txt
  cowork policy suggest --json | cowork policy apply --from - --yes`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.From == "" {
				return cmdutil.FlagErrorf("cowork policy apply needs --from FILE (- for stdin), e.g. cowork policy suggest > p.txt; cowork policy apply --from p.txt")
			}
			return exec(cmd, "apply", nil)
		},
	}
	cmd.Flags().StringVar(&o.From, "from", "", "the policy file to apply (- for stdin)")
	cmd.Flags().BoolVarP(&o.Yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

// runApply shows the difference, asks, and sets the policy. Nothing is
// written before the file has been read whole, parsed and compiled, and
// before the user said yes; the config is then replaced in one rename
// (instance.UpdateConfig), or by the running hostd, which does the same.
func runApply(ctx context.Context, o *Options) error {
	p, err := readPolicyFile(o)
	if err != nil {
		return &cmdutil.FlagError{Err: fmt.Errorf("%s: %w; nothing was changed", o.From, err)}
	}
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	source := o.From
	if source == "-" {
		source = "stdin"
	}
	current := inst.Config.Network.Policy
	d := unifiedDiff(current.Describe(), p.Describe(), o.Name+" (current)", source+" (proposed)", o.IO.ColorStdout())
	if d == "" {
		fmt.Fprintf(o.IO.ErrOut, "%s already has this policy; nothing to change\n", o.Name)
		return nil
	}
	fmt.Fprint(o.IO.Out, d)
	if !o.Yes {
		yes, err := cmdutil.Confirm(o.IO, "cowork policy apply", fmt.Sprintf("Apply this policy to %s?", o.Name), "--yes")
		if err != nil {
			return err
		}
		if !yes {
			fmt.Fprintln(o.IO.ErrOut, "not applied")
			return &cmdutil.ExitError{Code: 1}
		}
	}
	// The diff is of the policy read at the start; a change made since
	// (another command, while this one asked) would be lost unseen.
	if err := unchanged(o.Name, current); err != nil {
		return err
	}
	applied, err := inst.SetPolicy(ctx, p)
	var invalid *cowork.InvalidPolicyError
	switch {
	case errors.As(err, &invalid):
		return &cmdutil.FlagError{Err: fmt.Errorf("%s: %w; nothing was changed", o.From, err)}
	case err != nil:
		return err
	case applied:
		fmt.Fprintf(o.IO.ErrOut, "applied to %s\n", o.Name)
	default:
		fmt.Fprintf(o.IO.ErrOut, "saved; %s is stopped and starts with it\n", o.Name)
	}
	return nil
}

// unchanged checks that the saved policy of the instance name is still
// was, the one the diff shown was made from. A running hostd saves each
// policy it applies, so the config is the policy in force either way.
// (The check and the change are two steps: a change between them, a few
// milliseconds apart, is not caught.)
func unchanged(name string, was policy.Policy) error {
	cfg, err := instance.Load(name)
	if err != nil {
		return err
	}
	if !slices.Equal(cfg.Network.Policy.Describe(), was.Describe()) {
		return fmt.Errorf("the policy of %s changed meanwhile; nothing was applied: run again to see the difference from it", name)
	}
	return nil
}

// readPolicyFile reads and checks the policy o.From names.
func readPolicyFile(o *Options) (policy.Policy, error) {
	var r io.Reader = o.IO.In
	if o.From != "-" {
		f, err := os.Open(o.From)
		if err != nil {
			return policy.Policy{}, errors.Unwrap(err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, policy.MaxText+1))
	if err != nil {
		return policy.Policy{}, err
	}
	p, err := parsePolicyFile(data)
	if err != nil {
		return p, err
	}
	if _, err := policy.Compile(p, netip.Addr{}, nil); err != nil {
		return p, err
	}
	return p, nil
}

// parsePolicyFile reads a policy file: JSON when it starts with {, a
// policy (cowork policy --json) or a suggestion holding one under
// "policy" (cowork policy suggest --json); else text (policy.ParseText).
func parsePolicyFile(data []byte) (policy.Policy, error) {
	var p policy.Policy
	if len(data) > policy.MaxText {
		return p, fmt.Errorf("over %d KiB, more than a policy", policy.MaxText>>10)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return p, errors.New("empty: a policy file holds at least its mode (mode: allowlist)")
	}
	if trimmed[0] != '{' {
		p, err := policy.ParseText(string(data))
		if err == nil && p.Mode == "" {
			// Every policy cowork writes says its mode first: a file without
			// one is not one (a suggestion cut short, its comments alone),
			// and would put the instance back in default mode.
			return p, errors.New("no mode: line; a policy file says its mode first (mode: allowlist or mode: default)")
		}
		return p, err
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &probe); err != nil {
		return p, fmt.Errorf("not JSON: %w", err)
	}
	raw := json.RawMessage(trimmed)
	if inner, ok := probe["policy"]; ok {
		raw = inner
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("not a policy: %w", err)
	}
	if p.Mode == "" {
		// As for text: {"policy":null} or {} would mean the default mode.
		return p, errors.New(`no "mode"; a policy says its mode ("mode": "allowlist" or "mode": "default")`)
	}
	return p, nil
}
