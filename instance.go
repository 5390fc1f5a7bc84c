package cowork

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/units"
)

// Instance is one cowork instance: its folder and config (as last read),
// and, while it runs, its daemon. Every change to the folder or the
// config goes through here, or through the daemon while it holds the
// instance (it saves a policy it applied); the CLI only asks.
type Instance struct {
	Name   string
	Paths  instance.Paths
	Config *instance.Config
}

// Open reads the named instance; *instance.NotFoundError when there is
// none (its message says how to make one).
func Open(name string) (*Instance, error) {
	cfg, err := instance.Load(name)
	if err != nil {
		return nil, err
	}
	paths, err := instance.PathsFor(name)
	if err != nil {
		return nil, err
	}
	return &Instance{Name: name, Paths: paths, Config: cfg}, nil
}

// List names the instances in $COWORK_HOME, sorted.
func List() ([]string, error) { return instance.List() }

// Create makes a new instance from src (disk, config, and the workspace
// folder if missing); convert, when not nil, follows the disk's
// conversion, which the daemon binary does. With src.Golden set (a key
// GoldenKey found), the disk is a clone of that golden disk instead, and
// the guest needs no provisioning. It never touches an existing instance
// (*instance.ExistsError) nor a folder that is not an interrupted
// Create's.
//
// An instance whose guest runs on a cluster (c.Remote()) has no disk
// here: its directory holds its config, and later its daemon's files.
func Create(ctx context.Context, c *instance.Config, src instance.Sources, convert Progress) (*Instance, error) {
	return create(ctx, c, src, convert, nil)
}

// create is Create, calling onDir with the instance's folder as soon as
// it is made (instance.CreateWith).
func create(ctx context.Context, c *instance.Config, src instance.Sources, convert Progress, onDir func(string) error) (*Instance, error) {
	mk := makeDisk(ctx, convert)
	if c.Remote() {
		if src != (instance.Sources{}) {
			return nil, fmt.Errorf("instance %s runs on a cluster: it is made from no local image, kernel or golden disk", c.Name)
		}
		mk = noDisk
	}
	if err := instance.CreateWith(c, src, mk, onDir); err != nil {
		return nil, err
	}
	return Open(c.Name)
}

// Provisioned says whether the guest reported itself provisioned once:
// an instance without it is left from an init that stopped early, which
// Resume goes on with.
func (i *Instance) Provisioned() bool {
	_, err := os.Stat(i.Paths.Provisioned())
	return err == nil
}

// Resume prepares an instance left by an interrupted init for its next
// Start, whose boot runs the guest's provisioning until done: it checks
// (and completes) what Create made. A provisioned instance is no init's
// to resume (*instance.ExistsError); a running one is complete, since its
// daemon started it.
func (i *Instance) Resume() error {
	if i.Provisioned() {
		return &instance.ExistsError{Name: i.Name}
	}
	if i.Running() || i.Config.Remote() {
		return nil // a guest on a cluster: nothing of it here to check
	}
	return instance.Finish(i.Config)
}

// Running says whether a daemon holds the instance (it may still boot).
func (i *Instance) Running() bool { return instance.Held(i.Paths) }

// Dial connects to the instance's daemon; ErrNotRunning when it has none.
func (i *Instance) Dial() (*Client, error) { return Dial(i.Name) }

// Start boots the instance, launching its daemon (cowork-hostd) unless one
// runs, and reports each boot event to progress until it is ready. See
// the package function Start for what an interrupted start does.
func (i *Instance) Start(ctx context.Context, progress func(*Event)) error {
	return Start(ctx, "", i.Name, progress)
}

// CleanStale removes what a daemon that died (kill -9, a crash) left:
// its pid file and sockets. It returns the dead daemon's pid, 0 when
// there was nothing to clean or a daemon runs.
func (i *Instance) CleanStale() int {
	if stale, _ := instance.CleanStale(i.Paths); stale != nil {
		return stale.Pid
	}
	return 0
}

// StopResult is what Stop did.
type StopResult struct {
	WasRunning bool
	// DeadPid is a daemon that had died, whose leftovers Stop removed.
	DeadPid int
}

// Stop shuts the guest down (cuts the power when force, or when it has
// not powered off within timeout) and returns once the daemon is gone.
// An instance that is not running is no error.
func (i *Instance) Stop(ctx context.Context, force bool, timeout time.Duration) (StopResult, error) {
	c, err := i.Dial()
	if errors.Is(err, ErrNotRunning) {
		return StopResult{DeadPid: i.CleanStale()}, nil
	}
	if err != nil {
		return StopResult{}, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	// The daemon may exit before it answers; what counts is that it is gone.
	stopErr := c.Stop(ctx, force, timeout)
	if err := WaitStopped(ctx, i.Paths); err != nil {
		return StopResult{WasRunning: true}, fmt.Errorf("%s did not stop (%v): %w%s", i.Name, stopErr, err, Diagnostics(i.Paths))
	}
	return StopResult{WasRunning: true}, nil
}

// Delete stops the instance (cutting the power when force; the result
// says what the stop did), deletes its pool's free clones, and removes
// its folder: the disk, the logs, the config last, so that a delete cut
// short leaves an instance a next delete still finds. The workspace is
// never removed; an instance whose workspace lies inside its folder is
// refused, with nothing changed.
func (i *Instance) Delete(ctx context.Context, force bool) (StopResult, error) {
	if err := i.CanDelete(); err != nil {
		return StopResult{}, err
	}
	r, err := i.Stop(ctx, force, 30*time.Second)
	if err != nil {
		return r, err
	}
	// A guest on a cluster leaves its VM, disk and seed there: they go
	// first, and while they stay, so does everything here, for a next
	// delete to find.
	if i.Config.Remote() {
		if err := deleteInCluster(ctx, i.Config); err != nil {
			return r, i.clusterKept(err, r.WasRunning)
		}
	}
	// Its pool's clones are VMs of their own: they go with it. One in a
	// run is its run's to delete.
	if i.Config.Throwaway == nil && !i.Config.Remote() {
		if _, err := i.DrainPool(ctx); err != nil {
			return r, fmt.Errorf("delete the pool of %s: %w", i.Name, err)
		}
	}
	return r, i.removeHere("")
}

// removeHere forgets the instance's secrets and removes its folder; a
// failure says to run `cowork delete` again, with flags.
func (i *Instance) removeHere(flags string) error {
	instance.ForgetSecrets(i.Config.Secrets, i.Paths)
	if err := removeInstanceDir(i.Paths); err != nil {
		return fmt.Errorf("remove %s: %w; run `cowork delete%s%s` again", i.Paths.Dir(), err, instance.NameFlag(i.Name), flags)
	}
	return nil
}

// CanDelete says why Delete would refuse the instance: its workspace lies
// inside the folder Delete removes.
func (i *Instance) CanDelete() error {
	if within(i.Config.Workspace, i.Paths.Dir()) {
		return fmt.Errorf("instance %s's workspace %s is inside its directory %s, which delete removes; nothing was deleted: move the workspace out first", i.Name, i.Config.Workspace, i.Paths.Dir())
	}
	return nil
}

// removeInstanceDir removes an instance's folder, its config last.
func removeInstanceDir(paths instance.Paths) error {
	entries, err := os.ReadDir(paths.Dir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if f := filepath.Join(paths.Dir(), e.Name()); f != paths.Config() {
			if err := os.RemoveAll(f); err != nil {
				return err
			}
		}
	}
	return os.RemoveAll(paths.Dir())
}

// within reports whether path is dir or lies under it, symbolic links
// resolved where they exist.
func within(path, dir string) bool {
	resolve := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return filepath.Clean(p)
	}
	rel, err := filepath.Rel(resolve(dir), resolve(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// ShrinkError is a resize to less than the disk has.
type ShrinkError struct {
	Name       string
	Have, Want units.Size
}

func (e *ShrinkError) Error() string {
	return fmt.Sprintf("%s's disk is %s; it can grow but never shrink (asked for %s)", e.Name, e.Have, e.Want)
}

// CanResize says whether the disk can grow to size now: not while the
// instance runs, and never to less than it has. It returns the disk's
// current size.
func (i *Instance) CanResize(size units.Size) (units.Size, error) {
	if err := i.LocalOnly(OpResize); err != nil {
		return 0, err
	}
	if i.Running() {
		return 0, fmt.Errorf("%s is running; stop it first with `cowork stop%s`", i.Name, instance.NameFlag(i.Name))
	}
	if err := i.suspendedError("grow its disk"); err != nil {
		return 0, err
	}
	n, err := instance.DiskSize(i.Config.DiskPath(i.Paths))
	if err != nil {
		return 0, fmt.Errorf("%s's disk: %w", i.Name, err)
	}
	have := units.Size(n)
	if size < have {
		return have, &ShrinkError{Name: i.Name, Have: have, Want: size}
	}
	return have, nil
}

// Resize grows the stopped instance's disk to size and saves it in the
// config; the guest grows its file system into it at its next start.
// What is on the disk stays where it is: the file only gets longer. It
// reports whether the disk grew (false: it had that size already).
func (i *Instance) Resize(size units.Size) (bool, error) {
	have, err := i.CanResize(size)
	if err != nil || have == size {
		return false, err
	}
	if err := instance.GrowDisk(i.Config.DiskPath(i.Paths), int64(size)); err != nil {
		return false, err
	}
	c, err := instance.UpdateConfig(i.Name, func(c *instance.Config) error { c.Disk = size; return nil })
	if err != nil {
		return true, err
	}
	i.Config = c
	return true, nil
}

// InvalidPolicyError is a policy that does not compile; nothing changed.
type InvalidPolicyError struct{ Err error }

func (e *InvalidPolicyError) Error() string { return e.Err.Error() }
func (e *InvalidPolicyError) Unwrap() error { return e.Err }

// SetPolicy replaces the instance's network policy: applied at once by its
// daemon (which saves it) when it runs, else saved for its next start. It
// reports whether it was applied to a running guest.
func (i *Instance) SetPolicy(ctx context.Context, p policy.Policy) (applied bool, err error) {
	if err := i.LocalOnly(OpPolicy); err != nil {
		return false, err
	}
	if _, err := policy.Compile(p, netip.Addr{}, nil); err != nil {
		return false, &InvalidPolicyError{Err: err}
	}
	c, err := i.Dial()
	switch {
	case errors.Is(err, ErrNotRunning):
		c, err := instance.UpdateConfig(i.Name, func(c *instance.Config) error { c.Network.Policy = p; return nil })
		if err == nil {
			i.Config = c
		}
		return false, err
	case err != nil:
		return false, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.SetPolicy(ctx, p); err != nil {
		return false, fmt.Errorf("apply the policy: %w", err)
	}
	return true, nil
}

// Agent opens a client to the guest agent through the daemon's
// agent.sock, once it is sure a live daemon serves it: a socket left by a
// daemon that died would only answer "connection refused", so that is
// cleaned up and the error says how to start the instance instead.
func (i *Instance) Agent() (*agentclient.Client, error) {
	sock, err := i.agentSocket()
	if err != nil {
		return nil, err
	}
	return agentclient.New(agentclient.UnixDialer(sock))
}

func (i *Instance) agentSocket() (string, error) {
	if !i.Running() {
		stale, err := instance.CleanStale(i.Paths)
		if err != nil && !errors.Is(err, instance.ErrRunning) {
			return "", fmt.Errorf("clean up after the instance's dead hostd: %w", err)
		}
		if stale != nil && stale.Pid != 0 {
			return "", fmt.Errorf("instance %s is not running: its hostd (pid %d) died, and what it left behind was cleaned up; start it with `cowork start%s`",
				i.Name, stale.Pid, instance.NameFlag(i.Name))
		}
		return "", NotRunningError(i.Name)
	}
	if _, err := os.Stat(i.Paths.AgentSock()); errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("instance %s is still starting; wait for `cowork start%s` to finish", i.Name, instance.NameFlag(i.Name))
	}
	return i.Paths.AgentSock(), nil
}

// NotRunningError is the error of an operation that needs the instance
// running; it wraps ErrNotRunning.
func NotRunningError(name string) error {
	return fmt.Errorf("instance %s is %w; start it with `cowork start%s`", name, ErrNotRunning, instance.NameFlag(name))
}

// Exec runs a command in the guest and waits for it (see
// agentclient.ExecOptions for its streams, terminal and signals).
func (i *Instance) Exec(ctx context.Context, o agentclient.ExecOptions) (agentclient.ExitStatus, error) {
	a, err := i.Agent()
	if err != nil {
		return agentclient.ExitStatus{}, err
	}
	defer a.Close()
	return a.Exec(ctx, o)
}

// Ask runs Claude Code in the guest on one prompt (see Client.Ask).
func (i *Instance) Ask(ctx context.Context, o AskOptions) (agentclient.ExitStatus, error) {
	c, err := i.Client()
	if err != nil {
		return agentclient.ExitStatus{}, err
	}
	defer c.Close()
	return c.Ask(ctx, o)
}

// Claude runs Claude Code interactively in the guest (see Client.Claude).
func (i *Instance) Claude(ctx context.Context, o ClaudeOptions) (agentclient.ExitStatus, error) {
	c, err := i.Client()
	if err != nil {
		return agentclient.ExitStatus{}, err
	}
	defer c.Close()
	return c.Claude(ctx, o)
}

// Status asks the running instance's daemon about it; ErrNotRunning when
// it is stopped (the config and Paths.LastStop() say the rest).
func (i *Instance) Status(ctx context.Context) (*Status, error) {
	c, err := i.Dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Status(ctx)
}

// Events follows the boot of the running instance: what happened so far,
// then what happens, until ctx ends or it is ready.
func (i *Instance) Events(ctx context.Context, each func(*Event)) error {
	c, err := i.Client()
	if err != nil {
		return err
	}
	defer c.Close()
	return c.follow(ctx, each)
}

// Client is Dial for an operation that needs the instance running: when
// it is not, it cleans up what a dead daemon left and says how to start
// it (NotRunningError).
func (i *Instance) Client() (*Client, error) {
	c, err := i.Dial()
	if errors.Is(err, ErrNotRunning) {
		i.CleanStale()
		return nil, NotRunningError(i.Name)
	}
	return c, err
}

// Clone makes the instance dst from this stopped one: a copy of its disk
// (a reflink where the file system can make one; an overlay on a golden
// disk stays one), settings and network policy, with its own name, MAC and
// cloud-init instance (the guest makes itself a new machine-id and ssh
// host keys at its first boot). Published ports are not copied: a host
// port is one instance's. workspace, when not empty, replaces the shared
// folder.
func (i *Instance) Clone(dst, workspace string) (*Instance, error) {
	if err := i.LocalOnly(OpClone); err != nil {
		return nil, err
	}
	if _, err := instance.Clone(i.Config, dst, instance.CloneOptions{Workspace: workspace}); err != nil {
		return nil, err
	}
	return Open(dst)
}
