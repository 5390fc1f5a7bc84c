// Package portcmd is `cowork port`: guest ports opened on the host while
// the instance runs.
package portcmd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
)

// Options is a parsed `cowork port` command line.
type Options struct {
	IO   *iostreams.IOStreams
	Name string // the instance (global --name)
	Op   string // publish, ls or rm

	GuestPort int
	UDP       bool     // publish: a UDP port
	Auto      bool     // publish, rm: follow the guest's listening ports, or stop
	HostAddr  string   // publish: IP:PORT
	Which     []string // rm
	JSON      bool
}

// NewCmdPort builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdPort(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	run := func(cmd *cobra.Command, op string) error {
		o.Name, o.Op = *name, op
		if runF != nil {
			return runF(o)
		}
		return Run(cmd.Context(), o)
	}
	cmd := &cobra.Command{
		Use:   "port",
		Short: "Open a guest port on this machine while the instance runs",
		Long: `A guest's TCP or UDP port published on this machine answers there as the
guest's service would, from the moment it is published until it is removed
or the instance stops or is suspended (cowork init --publish makes one that
comes back at every start). Each publish and removal is written to the audit log (cowork
proxy). Connections to a published port are this machine's into the guest:
the network policy, which governs what the guest reaches, does not apply.`,
		Args: cmdutil.UnknownCommand,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	var address string
	publish := &cobra.Command{
		Use:   "publish GUESTPORT[:HOSTPORT]",
		Short: "Make a guest TCP (or UDP) port reachable on this machine",
		Long: `Make the guest's TCP port GUESTPORT (UDP with --udp) reachable on this
machine at HOSTPORT (the same number unless given; 0 takes a free one), on
127.0.0.1 unless --address says otherwise. It prints where it listens. A
UDP port gives each peer a flow of its own into the guest, 64 at once,
each ending after 90 s without a datagram.`,
		Example: `  cowork port publish 8000
  cowork port publish 3000:0
  cowork port publish 8080:9090 --address 0.0.0.0
  cowork port publish 5353 --udp
  cowork port publish --auto`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Auto {
				if len(args) != 0 || o.UDP || cmd.Flags().Changed("address") {
					return cmdutil.FlagErrorf("port publish --auto takes no port, --udp or --address: it follows every port the guest listens on, on 127.0.0.1")
				}
				return run(cmd, "auto-on")
			}
			if len(args) != 1 {
				return cmdutil.FlagErrorf("port publish needs one GUESTPORT[:HOSTPORT], e.g. cowork port publish 8000")
			}
			guest, host, err := parsePorts(args[0])
			if err != nil {
				return err
			}
			if net.ParseIP(address) == nil {
				return cmdutil.FlagErrorf("--address %q is no IP address: e.g. 127.0.0.1, 0.0.0.0, ::1", address)
			}
			o.GuestPort, o.HostAddr = guest, net.JoinHostPort(address, strconv.Itoa(host))
			return run(cmd, "publish")
		},
	}
	publish.Flags().StringVar(&address, "address", "127.0.0.1", "the host address to listen on")
	publish.Flags().BoolVar(&o.UDP, "udp", false, "publish a UDP port")
	publish.Flags().BoolVar(&o.Auto, "auto", false, "follow the guest: publish each TCP and UDP port (1024 and up; UDP up to 32767) it listens on, at the same number on 127.0.0.1, while it listens")
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the published ports",
		Args:    cmdutil.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return run(cmd, "ls") },
	}
	ls.Flags().BoolVar(&o.JSON, "json", false, "print JSON")
	rm := &cobra.Command{
		Use:     "rm PORT...",
		Aliases: []string{"remove"},
		Short:   "Close published ports and the connections through them",
		Long: `Close published ports, each named by its host address (127.0.0.1:8000),
its host port, or its guest port when one host port serves it, with /udp
(or /tcp) after it when a TCP and a UDP port share it. Connections through
them are cut. A port of the config (init --publish) comes back at
the next start.`,
		Example: "  cowork port rm 8000\n  cowork port rm 5353/udp",
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Auto {
				if len(args) != 0 {
					return cmdutil.FlagErrorf("port rm --auto takes no PORT: it stops following the guest and closes the ports it followed")
				}
				return run(cmd, "auto-off")
			}
			if len(args) == 0 {
				return cmdutil.FlagErrorf("port rm needs the PORT to close, e.g. cowork port rm 8000")
			}
			o.Which = args
			return run(cmd, "rm")
		},
	}
	rm.Flags().BoolVar(&o.Auto, "auto", false, "stop following the guest's listening ports, and close those followed")
	cmd.AddCommand(publish, ls, rm)
	return cmd
}

// parsePorts reads GUESTPORT[:HOSTPORT].
func parsePorts(s string) (guest, host int, err error) {
	g, h, hasHost := strings.Cut(s, ":")
	guest, gerr := strconv.Atoi(g)
	host = guest
	var herr error
	if hasHost {
		host, herr = strconv.Atoi(h)
	}
	if gerr != nil || herr != nil || guest < 1 || guest > 65535 || host < 0 || host > 65535 {
		return 0, 0, cmdutil.FlagErrorf("%q: want GUESTPORT[:HOSTPORT], ports 1-65535 (HOSTPORT 0 takes a free one), e.g. 8000 or 3000:0", s)
	}
	return guest, host, nil
}

// Run carries out o.
func Run(ctx context.Context, o *Options) error {
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	switch o.Op {
	case "auto-on", "auto-off":
		on := o.Op == "auto-on"
		if err := inst.AutoPublish(ctx, on); err != nil {
			return err
		}
		if on {
			fmt.Fprintf(o.IO.ErrOut, "following the ports %s listens on (TCP and UDP, 1024 and up; UDP up to 32767) at the same numbers on 127.0.0.1, until it stops, or `cowork port rm%s --auto`; `cowork port ls` shows them\n", inst.Name, instance.NameFlag(inst.Name))
		} else {
			fmt.Fprintf(o.IO.ErrOut, "no longer following the ports %s listens on; those followed are closed\n", inst.Name)
		}
		return nil
	case "publish":
		publish := inst.Publish
		if o.UDP {
			publish = inst.PublishUDP
		}
		p, err := publish(ctx, o.HostAddr, o.GuestPort)
		suffix := protoSuffix(p.Proto)
		if err != nil {
			if strings.Contains(err.Error(), "address already in use") {
				return fmt.Errorf("%s is in use on this machine: publish to another host port (GUESTPORT:HOSTPORT, or :0 for any)", o.HostAddr)
			}
			return err
		}
		fmt.Fprintf(o.IO.Out, "%s%s\n", p.HostAddr, suffix)
		fmt.Fprintf(o.IO.ErrOut, "guest port %d%s of %s answers at %s until it stops, or `cowork port rm%s %d%s`\n", p.GuestPort, suffix, inst.Name, p.HostAddr, instance.NameFlag(inst.Name), p.GuestPort, suffix)
		if host, _, _ := net.SplitHostPort(p.HostAddr); !net.ParseIP(host).IsLoopback() {
			fmt.Fprintf(o.IO.ErrOut, "cowork: note: %s is reachable from other machines on your networks, not only from this one\n", p.HostAddr)
		}
		return nil
	case "rm":
		var errs []error
		for _, w := range o.Which {
			p, err := inst.Unpublish(ctx, w)
			if err != nil {
				if errors.Is(err, cowork.ErrNoSuchPort) {
					err = fmt.Errorf("%s is not published on %s; `cowork port ls%s` lists what is", w, inst.Name, instance.NameFlag(inst.Name))
				}
				errs = append(errs, err)
				continue
			}
			fmt.Fprintf(o.IO.Out, "%s%s\n", p.HostAddr, protoSuffix(p.Proto))
		}
		return errors.Join(errs...)
	}
	ports, err := inst.Ports(ctx)
	if err != nil {
		return err
	}
	if o.JSON {
		if ports == nil {
			ports = []cowork.Port{}
		}
		return cmdutil.PrintJSON(o.IO.Out, ports)
	}
	if len(ports) == 0 {
		fmt.Fprintf(o.IO.ErrOut, "no port of %s is published\n", inst.Name)
		return nil
	}
	w := tabwriter.NewWriter(o.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "HOST\tGUEST PORT\tPROTO\tFROM")
	for _, p := range ports {
		from := "port publish"
		switch {
		case p.Config:
			from = "config"
		case p.Auto:
			from = "auto"
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", p.HostAddr, p.GuestPort, cmp.Or(p.Proto, "tcp"), from)
	}
	return w.Flush()
}

// protoSuffix is how a port's protocol is written after it: "/udp", or
// nothing for TCP.
func protoSuffix(proto string) string {
	if proto == "udp" {
		return "/udp"
	}
	return ""
}
