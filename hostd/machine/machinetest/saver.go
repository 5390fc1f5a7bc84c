package machinetest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/coworkhq/cowork/guestagent"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// The fake's saved guest: device.state holds the generation of the
// guest it saved (each started guest gets a new one), so that a test can
// tell a resumed guest from one booted cold; ram is a sparse file of the
// guest's memory size, as QEMU's backend writes. A Guest with a StateFile
// writes the generation into that one file instead, as vz's backend
// writes its one state file, and names it in Saved.Files.

// SaveFault is how a Saver step of the machines a Host makes fails.
type SaveFault struct {
	// Detach fails DetachShare, the share staying attached.
	Detach error
	// Save fails Save, the guest running on.
	Save error
	// Restore fails Restore: the state does not load.
	Restore error
}

// SetSaveFault makes the machines made from now on fail as f says.
func (h *Host) SetSaveFault(f SaveFault) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fault = f
}

// SetIdentity sets what the machines made from now on report as their
// Identity (machine.Saver): a test changes it to stand for another QEMU
// or another device layout. Binary must name a file (hostd digests it).
func (h *Host) SetIdentity(id machine.Identity) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.identity = id
}

// Identity is what the machines made from now on report.
func (h *Host) Identity() machine.Identity {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.identity
}

// Generation tells the guests apart: each machine that boots gets a new
// one, and a resumed machine the one it saved.
func (m *Machine) Generation() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.generation
}

// Shares says how often the share was unplugged and plugged in.
func (m *Machine) Shares() (detached, attached int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.detaches, m.attaches
}

// Resumed says whether the machine was restored from a saved guest.
func (m *Machine) Resumed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.resumed
}

// DetachShare calls eject first, as QEMU's does, and counts those that
// succeed (Ejects).
func (m *Machine) DetachShare(ctx context.Context, eject func(context.Context) error) error {
	if eject != nil && eject(ctx) == nil {
		m.mu.Lock()
		m.ejects++
		m.mu.Unlock()
	}
	if m.fault.Detach != nil {
		return m.fault.Detach
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.detaches++
	return nil
}

// Ejects counts the DetachShares whose eject succeeded.
func (m *Machine) Ejects() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ejects
}

func (m *Machine) AttachShare(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attaches++
	return nil
}

// Save writes the guest's generation and a sparse RAM file into dir, and
// pauses the guest, as a backend does.
func (m *Machine) Save(_ context.Context, dir string) (*machine.Saved, error) {
	if s := m.State(); s != machine.Running {
		return nil, fmt.Errorf("machinetest: cannot save a VM that is %s", s)
	}
	if m.fault.Save != nil {
		return nil, m.fault.Save
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	saved := &machine.Saved{Dir: dir, Memory: m.Config.Memory}
	if name := m.guest.StateFile; name != "" {
		saved.Files = []string{name}
		if err := os.WriteFile(filepath.Join(dir, name), []byte("generation "+strconv.Itoa(m.Generation())+"\n"), 0o600); err != nil {
			return nil, err
		}
		m.SetState(machine.Paused)
		return saved, nil
	}
	if err := os.WriteFile(saved.DeviceState(), []byte("generation "+strconv.Itoa(m.Generation())+"\n"), 0o600); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(saved.RAM(), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := f.Truncate(m.Config.Memory); err != nil {
		return nil, err
	}
	m.SetState(machine.Paused)
	return saved, nil
}

// Restore loads a saved guest: its generation, and its agent back up.
func (m *Machine) Restore(_ context.Context, s *machine.Saved) error {
	if m.fault.Restore != nil {
		return m.fault.Restore
	}
	state := s.DeviceState()
	if m.guest.StateFile != "" {
		state = filepath.Join(s.Dir, m.guest.StateFile)
	}
	b, err := os.ReadFile(state)
	if err != nil {
		return err
	}
	gen, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(string(b)), "generation "))
	if err != nil {
		return fmt.Errorf("machinetest: %s is no state this fake saved", filepath.Base(state))
	}
	if st, err := os.Stat(s.RAM()); m.guest.StateFile == "" && (err != nil || st.Size() != m.Config.Memory) {
		return errors.New("machinetest: the RAM file is missing or of another size")
	}
	m.mu.Lock()
	m.generation, m.resumed = gen, true
	m.mu.Unlock()
	if err := m.boot(context.Background()); err != nil {
		return err
	}
	m.SetState(machine.Paused)
	return nil
}

func (m *Machine) Continue(context.Context) error {
	m.SetState(machine.Running)
	return nil
}

func (m *Machine) Identity(context.Context) (machine.Identity, error) {
	return m.identity, nil
}

var _ machine.Saver = (*Machine)(nil)

// guestShare is the fake guest's shares as its agent's share calls see
// them: a /proc tree of its own, whose mountinfo says what is mounted
// where, and where a test makes processes that use /workspace.
type guestShare struct {
	proc    string
	mu      sync.Mutex
	mounted map[string]GuestMount // by mount point
}

// GuestMount is a share the fake guest has mounted.
type GuestMount struct {
	Tag      string
	ReadOnly bool
}

func newGuestShare(t testing.TB, mounted bool) (*guestShare, error) {
	g := &guestShare{proc: t.TempDir(), mounted: map[string]GuestMount{}}
	if err := os.MkdirAll(filepath.Join(g.proc, "self"), 0o755); err != nil {
		return nil, err
	}
	if mounted {
		g.mounted["/workspace"] = GuestMount{Tag: "workspace"}
	}
	return g, g.write()
}

// write makes mountinfo say what is mounted; g.mu is held or g is new.
func (g *guestShare) write() error {
	var b strings.Builder
	dirs := slices.Sorted(maps.Keys(g.mounted))
	for i, dir := range dirs {
		m, opts := g.mounted[dir], "rw"
		if m.ReadOnly {
			opts = "ro"
		}
		fmt.Fprintf(&b, "%d 25 0:%d / %s %s,relatime shared:20 - virtiofs %s rw\n", 36+i, 45+i, dir, opts, m.Tag)
	}
	return os.WriteFile(filepath.Join(g.proc, "self", "mountinfo"), []byte(b.String()), 0o644)
}

func (g *guestShare) mount(tag, dir string, readOnly bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.mounted[dir] = GuestMount{Tag: tag, ReadOnly: readOnly}
	return g.write()
}

func (g *guestShare) unmount(dir string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.mounted, dir)
	return g.write()
}

func (g *guestShare) system() *guestagent.ShareSystem {
	return &guestagent.ShareSystem{
		ProcRoot: g.proc,
		Unmount:  func(dir string, _ bool) error { return g.unmount(dir) },
		Mount:    g.mount,
		Eject:    func() (int, error) { return 1, nil }, // the agent refuses one still mounted
	}
}

// ShareMounted says whether the guest has the workspace mounted.
func (m *Machine) ShareMounted() bool {
	_, ok := m.Mounted()["/workspace"]
	return ok
}

// Mounted is what the guest has mounted, by mount point.
func (m *Machine) Mounted() map[string]GuestMount {
	m.mu.Lock()
	g := m.share
	m.mu.Unlock()
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.mounted)
}

// UseShare makes a guest process, pid and comm, whose working directory
// is in /workspace: a suspend must name it, or --force unmount under it.
func (m *Machine) UseShare(t testing.TB, pid int, comm string) {
	m.UseFolder(t, pid, comm, "/workspace/project")
}

// UseFolder makes a guest process, pid and comm, whose working directory
// is cwd.
func (m *Machine) UseFolder(t testing.TB, pid int, comm, cwd string) {
	t.Helper()
	m.mu.Lock()
	g := m.share
	m.mu.Unlock()
	dir := filepath.Join(g.proc, strconv.Itoa(pid))
	if err := os.MkdirAll(filepath.Join(dir, "fd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "comm"), []byte(comm+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(cwd, filepath.Join(dir, "cwd")); err != nil {
		t.Fatal(err)
	}
}

// Listen makes the fake guest's /proc/net say it listens on these IPv4
// sockets (and on nothing else): what its agent's listeners call reads.
func (m *Machine) Listen(t testing.TB, ls ...agentcall.Listener) {
	t.Helper()
	m.mu.Lock()
	g := m.share
	m.mu.Unlock()
	files := map[string]string{"tcp": "  sl  local_address rem_address   st\n", "udp": "  sl  local_address rem_address   st\n"}
	for i, l := range ls {
		ip := netip.MustParseAddr(l.Addr).As4()
		state := "0A"
		if l.Proto == "udp" {
			state = "07"
		}
		files[l.Proto] += fmt.Sprintf("%4d: %08X:%04X 00000000:0000 %s 00000000:00000000 00:00000000 00000000     0        0 %d\n",
			i, binary.LittleEndian.Uint32(ip[:]), l.Port, state, 1000+i)
	}
	os.MkdirAll(filepath.Join(g.proc, "net"), 0o755)
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(g.proc, "net", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
