// Package initcmd is `cowork init`: create an instance and start it.
package initcmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/boot"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/units"
)

// Options is a parsed `cowork init` command line.
type Options struct {
	IO   *iostreams.IOStreams
	Name string

	CPUs      int
	Memory    string
	Disk      string
	Workspace string
	Arch      string
	Image     string
	Kernel    string
	Initrd    string
	Cmdline   string
	Publish   []string
	Mode      string
	Allow     []string
	Deny      []string
	HostPorts []int
	Upstream  string
	Timeout   time.Duration
	NoStart   bool
}

// NewCmdInit builds the command; name is the global --name.
func NewCmdInit(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the sandbox VM and start it",
		Long: `Create an instance (its disk, settings and the workspace folder if missing)
and start it. The instance lives in $COWORK_HOME/NAME (default ~/.cowork/sandbox);
the workspace is shared into the guest at /workspace.

--image takes a raw disk image. --kernel and --initrd boot a kernel directly
(with --cmdline) instead of the image's EFI boot loader.`,
		Example: `  cowork init --image ubuntu.raw
  cowork init --cpus 2 --memory 2GiB --disk 20GiB --image ubuntu.raw
  cowork init --image ubuntu.raw --publish 8080:80 --publish 127.0.0.1:2222:22
  cowork init --image ubuntu.raw --network-mode allowlist --allow api.anthropic.com --allow '*.npmjs.org' --allow-host-port 5432
  cowork init --name test --image rootfs.img --kernel vmlinuz --initrd initrd.img --cmdline "console=ttyAMA0"`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if runF != nil {
				return runF(o)
			}
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.CPUs, "cpus", instance.DefaultCPUs, "virtual CPUs")
	f.StringVar(&o.Memory, "memory", instance.DefaultMemory.String(), "memory, e.g. 4GiB")
	f.StringVar(&o.Disk, "disk", instance.DefaultDisk.String(), "disk size, e.g. 10GiB (the disk file is sparse)")
	f.StringVar(&o.Workspace, "workspace", "~/cowork-workspace", "host folder shared at /workspace")
	f.StringVar(&o.Arch, "arch", instance.HostArch(), "guest architecture: arm64 or amd64")
	f.StringVar(&o.Image, "image", "", "raw disk image to create the instance from")
	f.StringVar(&o.Kernel, "kernel", "", "kernel to boot directly (with --initrd and --cmdline)")
	f.StringVar(&o.Initrd, "initrd", "", "initial ramdisk for --kernel")
	f.StringVar(&o.Cmdline, "cmdline", "", "kernel command line for --kernel")
	f.StringArrayVarP(&o.Publish, "publish", "p", nil, "make a guest TCP port reachable on the host: [HOSTIP:]HOSTPORT:GUESTPORT (HOSTIP defaults to 127.0.0.1); repeatable")
	f.StringVar(&o.Mode, "network-mode", policy.ModeDefault, "default (the internet, no private networks) or allowlist (only what --allow lists)")
	f.StringArrayVar(&o.Allow, "allow", nil, "allow a domain (example.com, *.example.com), address or CIDR; repeatable")
	f.StringArrayVar(&o.Deny, "deny", nil, "deny a domain, address or CIDR (the deny list always wins); repeatable")
	f.IntSliceVar(&o.HostPorts, "allow-host-port", nil, "let the guest reach this host loopback port at host.cowork.internal; repeatable")
	f.StringVar(&o.Upstream, "upstream-proxy", "", "send all egress through this proxy: http://HOST:PORT or socks5://HOST:PORT (default: $HTTPS_PROXY or $ALL_PROXY)")
	f.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "how long to wait for the guest to be ready")
	f.BoolVar(&o.NoStart, "no-start", false, "create the instance without starting it")
	return cmd
}

// Config turns the options into a validated instance config; every
// problem is a usage error.
func (o *Options) Config() (*instance.Config, instance.Sources, error) {
	var src instance.Sources
	mem, err := units.ParseSize(o.Memory)
	if err != nil {
		return nil, src, &cmdutil.FlagError{Err: fmt.Errorf("--memory: %w", err)}
	}
	disk, err := units.ParseSize(o.Disk)
	if err != nil {
		return nil, src, &cmdutil.FlagError{Err: fmt.Errorf("--disk: %w", err)}
	}
	ws, err := filepath.Abs(instance.ExpandHome(o.Workspace))
	if err != nil {
		return nil, src, &cmdutil.FlagError{Err: err}
	}
	c := &instance.Config{
		Name: o.Name, CPUs: o.CPUs, Memory: mem, Disk: disk, Workspace: ws, Arch: o.Arch,
		Boot: instance.BootEFI, Cmdline: o.Cmdline, Created: time.Now().UTC(),
	}
	if o.Kernel != "" {
		c.Boot = instance.BootKernel
	}
	c.Network = instance.Network{
		Policy:   policy.Policy{Mode: o.Mode, Allow: o.Allow, Deny: o.Deny, HostPorts: o.HostPorts},
		Upstream: o.Upstream,
	}
	var errs []error
	if o.Upstream != "" {
		if err := netstack.CheckUpstream(o.Upstream); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range o.Publish {
		pub, err := instance.ParsePublish(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.Publish = append(c.Publish, pub)
	}
	errs = append(errs, c.Validate(instance.HostMemory()))
	if o.Initrd != "" && o.Kernel == "" {
		errs = append(errs, errors.New("--initrd needs --kernel"))
	}
	if o.Image == "" {
		// Downloading the Ubuntu image arrives with the image pipeline.
		errs = append(errs, errors.New("--image is required: give a raw disk image"))
	}
	for flag, p := range map[string]*string{"--image": &o.Image, "--kernel": &o.Kernel, "--initrd": &o.Initrd} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(instance.ExpandHome(*p))
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", flag, *p, errors.Unwrap(err)))
			continue
		}
		*p = abs
	}
	if err := errors.Join(errs...); err != nil {
		return nil, src, &cmdutil.FlagError{Err: err}
	}
	return c, instance.Sources{Image: o.Image, Kernel: o.Kernel, Initrd: o.Initrd}, nil
}

func run(ctx context.Context, o *Options) error {
	c, src, err := o.Config()
	if err != nil {
		return err
	}
	fmt.Fprintf(o.IO.ErrOut, "Creating %s (%d CPUs, %s memory, %s disk, workspace %s)\n", c.Name, c.CPUs, c.Memory, c.Disk, c.Workspace)
	if err := instance.Create(c, src); err != nil {
		return err
	}
	if o.NoStart {
		fmt.Fprintf(o.IO.ErrOut, "created %s; start it with `cowork start`\n", c.Name)
		return nil
	}
	return boot.Start(ctx, o.IO, c.Name, o.Timeout)
}
