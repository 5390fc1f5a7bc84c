// Package initcmd is `cowork init`: create an instance and start it.
package initcmd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/boot"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/progress"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/image/catalog"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/units"
)

// Options is a parsed `cowork init` command line.
type Options struct {
	IO   *iostreams.IOStreams
	Name string

	CPUs      int
	Memory    string
	Disk      string
	Workspace string
	Mounts    []string
	SSHAgent  bool
	Arch      string
	Image     string
	ImageSHA  string
	Kernel    string
	Initrd    string
	Cmdline   string
	Publish   []string
	Mode      string
	Allow     []string
	Deny      []string
	HostPorts []int
	Upstream  string
	MaxFlows  int
	Packages  []string
	Commands  []string
	With      []string
	Timeout   time.Duration
	NoStart   bool
	NoGolden  bool
	// Backend is where the guest runs: "local" or kubevirt, then on
	// the cluster of kubeconfig context Context, in Namespace.
	Backend   string
	Context   string
	Namespace string
	// Changed reports whether a flag was given; nil means none was.
	Changed func(flag string) bool
	// Inspect says what a local image and kernel are; nil asks
	// cowork-hostd (hostd.Inspect), which links the code that reads disks.
	Inspect func(ctx context.Context, image, kernel string) (hostdwire.Inspection, error)
	// GoldenKey says which golden disk the instance would clone; nil asks
	// cowork-hostd (cowork.GoldenKey).
	GoldenKey func(ctx context.Context, c *instance.Config, src instance.Sources) (hostdwire.GoldenKey, error)
	// HostArch is this machine's architecture; nil is instance.HostArch.
	HostArch func() string
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

By default the disk comes from Ubuntu 22.04's cloud image for --arch, pinned by
release and sha256, downloaded (resumably) into $COWORK_HOME/cache and
verified; on first boot cloud-init installs the toolchain and Claude Code, and
init follows it until the guest is ready. --image takes another image (qcow2
or raw; a path, or a URL with --image-sha256). --kernel and --initrd boot a
kernel directly (with --cmdline) instead of the image's EFI boot loader.
Interrupted (or timed out, or its provisioning failed), init resumes when run
again: the download where it stopped, and an instance that was created but
never finished provisioning is started and its provisioning followed again,
with the settings it was created with (flags that contradict them are
refused). An instance that finished its init is not touched.

The first init of an image and provisioning keeps the provisioned disk as a
golden disk in $COWORK_HOME/cache/golden (one extra boot); a later init of the
same pair clones it in seconds instead of provisioning. ` + "`cowork image ls`" + ` lists
them, ` + "`cowork image prune`" + ` frees them; --no-golden provisions from scratch.

--backend kubevirt runs the guest on a Kubernetes cluster through KubeVirt
instead (cowork-hostd-kubevirt, ` + "`make kubevirt`" + `, is its daemon): --image is then
a container disk the cluster pulls, and the VM goes in --namespace (default
cowork, which needs cowork's egress proxy) of the kubeconfig's --context.
Nothing is downloaded or made here but the instance's settings. Not yet run
on a real cluster.`,
		Example: `  cowork init
  cowork init --image ubuntu.raw
  cowork init --cpus 2 --memory 2GiB --disk 20GiB --image ubuntu.raw
  cowork init --image ubuntu.raw --publish 8080:80 --publish 127.0.0.1:2222:22
  cowork init --mount ~/datasets:/data:ro --mount ~/src/lib
  cowork init --with docker
  cowork init --image ubuntu.raw --network-mode allowlist --allow api.anthropic.com --allow '*.npmjs.org' --allow-host-port 5432
  cowork init --name test --image rootfs.img --kernel vmlinuz --initrd initrd.img --cmdline "console=ttyAMA0"
  cowork init --name k8s --backend kubevirt --context kind-cowork --image quay.io/containerdisks/ubuntu:22.04`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			o.Changed = cmd.Flags().Changed
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
	f.BoolVar(&o.SSHAgent, "ssh-agent", false, "lend the guest this machine's SSH agent (SSH_AUTH_SOCK): its keys stay here, each signature is audited")
	f.StringArrayVar(&o.Mounts, "mount", nil, "share another host folder: HOST[:GUEST][:ro] (GUEST defaults to HOST's path; ro: read-only, enforced by this machine); repeatable")
	f.StringVar(&o.Arch, "arch", "", "guest architecture: arm64 or amd64 (default: what --kernel or --image is built for, else this machine's, "+instance.HostArch()+"; with --backend kubevirt, "+clusterArch+")")
	f.StringVar(&o.Image, "image", "", "disk image (qcow2 or raw): a path or an http(s) URL (default: Ubuntu 22.04 for --arch, pinned and verified); with --backend kubevirt, a container disk reference")
	f.StringVar(&o.ImageSHA, "image-sha256", "", "the sha256 --image (a download or a local file) must have")
	f.StringVar(&o.Kernel, "kernel", "", "kernel to boot directly (with --initrd and --cmdline)")
	f.StringVar(&o.Initrd, "initrd", "", "initial ramdisk for --kernel")
	f.StringVar(&o.Cmdline, "cmdline", "", "kernel command line for --kernel")
	f.StringArrayVarP(&o.Publish, "publish", "p", nil, "make a guest TCP port reachable on the host: [HOSTIP:]HOSTPORT:GUESTPORT (HOSTIP defaults to 127.0.0.1); repeatable")
	f.StringVar(&o.Mode, "network-mode", policy.ModeDefault, "default (the internet, no private networks) or allowlist (only what --allow lists)")
	f.StringArrayVar(&o.Allow, "allow", nil, "allow a domain (example.com, *.example.com), address or CIDR; repeatable")
	f.StringArrayVar(&o.Deny, "deny", nil, "deny a domain, address or CIDR (the deny list always wins); repeatable")
	f.IntSliceVar(&o.HostPorts, "allow-host-port", nil, "let the guest reach this host loopback port at host.cowork.internal; repeatable")
	f.StringVar(&o.Upstream, "upstream-proxy", "", "send all egress through this proxy: http://HOST:PORT or socks5://HOST:PORT (default: $HTTPS_PROXY or $ALL_PROXY)")
	f.IntVar(&o.MaxFlows, "max-flows", policy.DefaultMaxFlows, "the most connections and UDP flows the guest may have open at once; more are refused")
	f.StringSliceVar(&o.Packages, "provision-packages", nil, "packages to install at first boot instead of the default toolchain")
	f.StringArrayVar(&o.Commands, "provision-cmd", nil, "a command to run as root at first boot, after the packages, instead of the defaults; repeatable")
	f.StringSliceVar(&o.With, "with", nil, "also install at first boot: docker (Docker Engine, its pulls through the auditing proxy); repeatable")
	f.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "how long to wait for the guest to be ready")
	f.BoolVar(&o.NoStart, "no-start", false, "create the instance without starting it")
	f.BoolVar(&o.NoGolden, "no-golden", false, "provision from scratch: neither clone a golden disk of this image and provisioning nor keep one")
	addClusterFlags(f, o)
	return cmd
}

// Config turns the options into a validated instance config; every
// problem is a usage error.
func (o *Options) Config() (*instance.Config, instance.Sources, error) {
	var src instance.Sources
	if err := o.checkBackend(); err != nil {
		return nil, src, err
	}
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
		Name: o.Name, CPUs: o.CPUs, Memory: mem, Disk: disk, Workspace: ws, Arch: cmp.Or(o.Arch, o.hostArch()),
		Boot: instance.BootEFI, Cmdline: o.Cmdline, Created: time.Now().UTC(),
	}
	if o.Kernel != "" {
		c.Boot = instance.BootKernel
	}
	c.SSHAgent = o.SSHAgent
	c.With = o.With
	c.Network = instance.Network{
		Policy:   policy.Policy{Mode: o.Mode, Allow: o.Allow, Deny: o.Deny, HostPorts: o.HostPorts},
		Upstream: o.Upstream,
	}
	if o.MaxFlows != policy.DefaultMaxFlows { // the default follows cowork, not the instance
		c.Network.MaxFlows = o.MaxFlows
	}
	var errs []error
	if o.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %s: want a positive duration, e.g. 30m", o.Timeout))
	}
	if o.MaxFlows < 1 {
		errs = append(errs, fmt.Errorf("--max-flows %d: want 1 or more", o.MaxFlows))
	}
	if o.Upstream != "" {
		if _, err := policy.ParseUpstream(o.Upstream); err != nil {
			errs = append(errs, err)
		}
	}
	for _, m := range o.Mounts {
		mnt, err := instance.ParseMount(m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.Mounts = append(c.Mounts, mnt)
	}
	for _, p := range o.Publish {
		pub, err := instance.ParsePublish(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.Publish = append(c.Publish, pub)
	}
	if o.Backend == instance.BackendKubeVirt {
		return o.clusterConfig(c, errs)
	}
	errs = append(errs, c.Validate(instance.HostMemory()))
	if home, err := instance.Home(); err == nil {
		errs = append(errs, c.CheckWorkspace(home), c.CheckMountHosts(home))
	}
	if o.Initrd != "" && o.Kernel == "" {
		errs = append(errs, errors.New("--initrd needs --kernel"))
	}
	if o.ImageSHA != "" && o.Image == "" {
		errs = append(errs, errors.New("--image-sha256 needs --image (the default image's digest is pinned)"))
	}
	if o.ImageSHA != "" && !sha256RE().MatchString(o.ImageSHA) {
		errs = append(errs, fmt.Errorf("--image-sha256 %q: want 64 hex digits", o.ImageSHA))
	}
	found := map[string]bool{}
	for flag, p := range map[string]*string{"--image": &o.Image, "--kernel": &o.Kernel, "--initrd": &o.Initrd} {
		if *p == "" || isURL(*p) && flag == "--image" {
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
		*p, found[flag] = abs, true
	}
	// A file that is no disk is refused now, not after a long conversion.
	var local string
	if found["--image"] {
		local = o.Image
	}
	var kernel string
	if found["--kernel"] {
		kernel = o.Kernel
	}
	facts, err := o.inspect(context.Background(), local, kernel)
	if err != nil {
		return nil, src, err
	}
	if facts.Image != nil && facts.Image.Err != "" {
		errs = append(errs, fmt.Errorf("--image: %s", facts.Image.Err))
	}
	if err := o.pickArch(c, facts, o.Kernel, o.Image); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, src, &cmdutil.FlagError{Err: err}
	}
	o.finish(c)
	return c, instance.Sources{Image: o.Image, Kernel: o.Kernel, Initrd: o.Initrd}, nil
}

// hostArch is this machine's architecture.
func (o *Options) hostArch() string {
	if o.HostArch != nil {
		return o.HostArch()
	}
	return instance.HostArch()
}

// finish sets what a valid config gets last: the provisioning, the
// guest user's uid and the cloud-init instance.
func (o *Options) finish(c *instance.Config) {
	if o.Packages != nil || o.Commands != nil {
		c.Provision = &instance.Provision{Packages: o.Packages, Commands: o.Commands}
	}
	c.GuestUID = os.Getuid()
	c.InstanceID = fmt.Sprintf("cowork-%s-%d", c.Name, time.Now().Unix())
}

// sha256RE is compiled on first use, not at every CLI start.
var sha256RE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(sha256:)?[0-9a-fA-F]{64}$`) })

func isURL(s string) bool { return strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://") }

func run(ctx context.Context, o *Options) error {
	began := time.Now()
	c, src, err := o.Config()
	if err != nil {
		return err
	}
	if saved, err := instance.Load(c.Name); err == nil {
		return resume(ctx, o, saved, c, src, began)
	}
	if p, err := instance.PathsFor(c.Name); err == nil {
		if _, err := os.Stat(p.Dir()); err == nil {
			if err := instance.CheckLeftover(p); err != nil {
				return err // not an interrupted init's: never overwritten
			}
			fmt.Fprintf(o.IO.ErrOut, "An earlier init of %s stopped before its disk was complete; making it again\n", c.Name)
		}
	}
	if err := checkWorkspace(c.Workspace); err != nil {
		return &cmdutil.FlagError{Err: err}
	}
	if c.Remote() {
		return o.createOnCluster(ctx, c, began)
	}
	fmt.Fprintf(o.IO.ErrOut, "Creating %s (%s, %d CPUs, %s memory, %s disk, workspace %s)\n", c.Name, c.Arch, c.CPUs, c.Memory, c.Disk, c.Workspace)
	if src.Image, err = fetchImage(ctx, o, c.Arch); err != nil {
		return err
	}
	if isURL(o.Image) { // a download is checked like a local --image, before its conversion
		facts, err := o.inspect(ctx, src.Image, o.Kernel)
		if err != nil {
			return err
		}
		if facts.Image == nil {
			return fmt.Errorf("--image %s: cowork-hostd said nothing about it: it is from another build than this cowork; install the pair from one build", o.Image)
		}
		if facts.Image.Err != "" {
			return fmt.Errorf("--image %s: %s", o.Image, facts.Image.Err)
		}
		before := c.Arch
		if err := o.pickArch(c, facts, o.Kernel, src.Image); err != nil {
			return err
		}
		if c.Arch != before {
			fmt.Fprintf(o.IO.ErrOut, "  arch      %s, what the image is built for\n", c.Arch)
		}
	}
	keep := o.lookupGolden(ctx, c, &src)
	if src.Golden != "" {
		if _, err := cowork.Create(ctx, c, src, nil); err != nil {
			return err
		}
	} else {
		convert := progress.New(o.IO, "convert")
		if _, err := cowork.Create(ctx, c, src, convert); err != nil {
			return err
		}
		convert.Done()
	}
	fmt.Fprintf(o.IO.ErrOut, "  resize    %s disk (grows in the guest at boot)\n", c.Disk)
	return o.startCreated(ctx, c.Name, began, keep)
}

// lookupGolden sets src.Golden when a golden disk of this image and
// provisioning exists (the disk is then cloned from it), and otherwise
// says whether the provisioned disk should be kept as one after the boot.
func (o *Options) lookupGolden(ctx context.Context, c *instance.Config, src *instance.Sources) (keep bool) {
	if o.NoGolden {
		return false
	}
	lookup := o.GoldenKey
	if lookup == nil {
		lookup = cowork.GoldenKey
	}
	k, err := lookup(ctx, c, *src)
	switch {
	case err != nil:
		fmt.Fprintf(o.IO.ErrOut, "warning: cannot look for a golden disk (%v); provisioning from scratch\n", err)
		return false
	case k.Found && k.Size > int64(c.Disk):
		fmt.Fprintf(o.IO.ErrOut, "  golden    %s is %s, more than --disk %s: provisioning from scratch\n", k.Key[:12], units.Size(k.Size), c.Disk)
		return false
	case k.Found:
		src.Golden = k.Key
		fmt.Fprintf(o.IO.ErrOut, "  golden    %s: cloning the disk this image and provisioning made before (no provisioning)\n", k.Key[:12])
		return false
	}
	return true
}

// startCreated boots a created instance unless --no-start, keeps its
// disk as a golden disk when keep and the guest provisioned itself, and
// reports the whole init's time.
func (o *Options) startCreated(ctx context.Context, name string, began time.Time, keep bool) error {
	flag := instance.NameFlag(name)
	if o.NoStart {
		fmt.Fprintf(o.IO.ErrOut, "created %s; start it with `cowork start%s`\n", name, flag)
		return nil
	}
	followed, err := boot.StartFollow(ctx, o.IO, name, o.Timeout)
	if err != nil {
		return err
	}
	if keep && followed.Provisioned {
		if err := o.keepGolden(ctx, name); err != nil {
			return err
		}
	}
	// The instance goes before the command: after ask, --name is Claude
	// Code's session name.
	fmt.Fprintf(o.IO.ErrOut, "%s created and ready in %s; next:\n  cowork%s shell\n  cowork%s exec uname -a\n  cowork%s ask \"write hello world in python\"\n",
		name, time.Since(began).Round(time.Second), flag, flag, flag)
	return nil
}

// keepGolden makes the freshly provisioned instance's disk a golden disk,
// then starts the instance again. A disk that could not be kept costs
// the next init its provisioning, nothing more: a warning, and the
// instance is started again either way.
func (o *Options) keepGolden(ctx context.Context, name string) error {
	inst, err := cowork.Open(name)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.IO.ErrOut, "Keeping the provisioned disk as a golden disk, so that the next init of this image and provisioning clones it (`cowork image ls`); this restarts %s\n", name)
	res, err := inst.CaptureGolden(ctx, 2*time.Minute)
	switch {
	case err != nil:
		fmt.Fprintf(o.IO.ErrOut, "warning: the provisioned disk was not kept: %v\n", err)
	case res.Existed:
		fmt.Fprintf(o.IO.ErrOut, "  golden    %s was kept by another init meanwhile; %s keeps its own disk\n", res.Key[:12], name)
	default:
		fmt.Fprintf(o.IO.ErrOut, "  golden    %s kept (%s disk)\n", res.Key[:12], res.Format)
	}
	return boot.Start(ctx, o.IO, name, o.Timeout)
}

// fetchImage returns a local path of the image to create the instance
// from: the given file, or a download (the pinned Ubuntu image by default)
// verified and cached in $COWORK_HOME/cache/images.
func fetchImage(ctx context.Context, o *Options, arch string) (string, error) {
	url, sum := o.Image, o.ImageSHA
	if url == "" {
		base, err := catalog.Default(arch)
		if err != nil {
			return "", err
		}
		url, sum = base.URL, base.SHA256
		fmt.Fprintf(o.IO.ErrOut, "  image     %s %s (sha256 pinned from %s)\n", base.Name, arch, base.Source)
	} else if !isURL(url) {
		if sum != "" {
			verify := progress.New(o.IO, "verify")
			if err := cowork.Verify(ctx, url, sum, verify); err != nil {
				return "", err
			}
			verify.Done()
		}
		return url, nil
	} else if sum == "" {
		fmt.Fprintf(o.IO.ErrOut, "warning: no --image-sha256 given; the download is not verified\n")
	}
	home, err := instance.Home()
	if err != nil {
		return "", err
	}
	bars := map[string]*progress.Bar{}
	path, err := cowork.Fetch(ctx, url, sum, filepath.Join(home, instance.CacheDir, "images"), func(phase string) cowork.Progress {
		for p, b := range bars {
			if p != phase {
				b.Done()
			}
		}
		b := progress.New(o.IO, phase)
		bars[phase] = b
		return b
	})
	if err != nil {
		return "", err
	}
	for _, b := range bars {
		b.Done()
	}
	if len(bars) == 0 {
		fmt.Fprintf(o.IO.ErrOut, "  download  cached: %s\n", path)
	}
	return path, nil
}
