// Package policycmd is `cowork policy`: view and change what the guest may
// reach on the network.
package policycmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// NewCmdPolicy builds the command; name is the global --name.
func NewCmdPolicy(ios *iostreams.IOStreams, name *string) *cobra.Command {
	var asJSON bool
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
  cowork policy reset`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := instance.Load(*name)
			if err != nil {
				return err
			}
			p := cfg.Network.Policy
			if asJSON {
				enc := json.NewEncoder(ios.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(p)
			}
			for _, line := range p.Describe() {
				fmt.Fprintln(ios.Out, line)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")

	change := func(use, short, example string, args cobra.PositionalArgs, edit func(*policy.Policy, []string) error) *cobra.Command {
		return &cobra.Command{
			Use:     use,
			Short:   short,
			Example: example,
			Args:    args,
			RunE: func(cmd *cobra.Command, args []string) error {
				return update(cmd.Context(), ios, *name, func(p *policy.Policy) error { return edit(p, args) })
			},
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
			},
			func(p *policy.Policy, args []string) error { p.Mode = args[0]; return nil }),
		change("allow ENTRY...", "Allow domains, addresses or CIDRs", "  cowork policy allow api.anthropic.com '*.github.com' 198.51.100.0/24", atLeastOne,
			func(p *policy.Policy, args []string) error { return add(&p.Allow, args) }),
		change("deny ENTRY...", "Deny domains, addresses or CIDRs (the deny list always wins)", "  cowork policy deny tracker.example.com", atLeastOne,
			func(p *policy.Policy, args []string) error { return add(&p.Deny, args) }),
		change("remove ENTRY...", "Take entries off the allow and deny lists", "  cowork policy remove '*.github.com'", atLeastOne,
			func(p *policy.Policy, args []string) error {
				for _, a := range args {
					n := len(p.Allow) + len(p.Deny)
					p.Allow = slices.DeleteFunc(p.Allow, func(e string) bool { return e == a })
					p.Deny = slices.DeleteFunc(p.Deny, func(e string) bool { return e == a })
					if n == len(p.Allow)+len(p.Deny) {
						return cmdutil.FlagErrorf("%q is on neither list; see `cowork policy`", a)
					}
				}
				return nil
			}),
		change("expose PORT...", "Let the guest reach host loopback ports at host.cowork.internal", "  cowork policy expose 5432 6379", atLeastOne,
			func(p *policy.Policy, args []string) error {
				for _, a := range args {
					port, err := strconv.Atoi(a)
					if err != nil || port < 1 || port > 65535 {
						return cmdutil.FlagErrorf("port %q: want 1 to 65535", a)
					}
					if !slices.Contains(p.HostPorts, port) {
						p.HostPorts = append(p.HostPorts, port)
					}
				}
				return nil
			}),
		change("unexpose PORT...", "Stop exposing host loopback ports", "  cowork policy unexpose 5432", atLeastOne,
			func(p *policy.Policy, args []string) error {
				for _, a := range args {
					port, _ := strconv.Atoi(a)
					if !slices.Contains(p.HostPorts, port) {
						return cmdutil.FlagErrorf("port %q is not exposed", a)
					}
					p.HostPorts = slices.DeleteFunc(p.HostPorts, func(x int) bool { return x == port })
				}
				return nil
			}),
		change("reset", "Go back to the default policy", "  cowork policy reset", cmdutil.NoArgs,
			func(p *policy.Policy, _ []string) error { *p = policy.Policy{}; return nil }),
	)
	return cmd
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
	cfg, err := instance.Load(name)
	if err != nil {
		return err
	}
	p := cfg.Network.Policy
	p.Allow, p.Deny, p.HostPorts = slices.Clone(p.Allow), slices.Clone(p.Deny), slices.Clone(p.HostPorts)
	if err := edit(&p); err != nil {
		return err
	}
	if _, err := policy.Compile(p, netip.Addr{}, nil); err != nil {
		return &cmdutil.FlagError{Err: err}
	}
	c, err := hostd.Dial(name)
	switch {
	case errors.Is(err, hostd.ErrNotRunning):
		cfg.Network.Policy = p
		paths, err := instance.PathsFor(name)
		if err != nil {
			return err
		}
		if err := cfg.Save(paths.Dir()); err != nil {
			return err
		}
		fmt.Fprintf(ios.ErrOut, "saved; %s is stopped and starts with it\n", name)
	case err != nil:
		return err
	default:
		defer c.Close()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := c.SetPolicy(ctx, p); err != nil {
			return fmt.Errorf("apply the policy: %w", err)
		}
		fmt.Fprintf(ios.ErrOut, "applied to %s\n", name)
	}
	for _, line := range p.Describe() {
		fmt.Fprintln(ios.Out, line)
	}
	return nil
}
