package kubevirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	kvv1 "kubevirt.io/api/core/v1"
	kvcorev1 "kubevirt.io/client-go/kubevirt/typed/core/v1"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/agentwire"
)

// Dialer opens a stream to a port of a VMI's vsock device.
type Dialer func(ctx context.Context, namespace, vmi string, port uint32) (net.Conn, error)

// SubresourceDialer reaches a VMI's vsock through the API server:
// KubeVirt's vsock subresource, a websocket that virt-handler joins to
// the guest's port on its node. The client needs the `get` verb on
// virtualmachineinstances/vsock in the namespace, and the cluster the
// VSOCK feature gate. The hop from virt-handler to the guest is plain
// (tls=false): the agent speaks its own protocol, and the API server and
// virt-handler are reached over TLS.
func SubresourceDialer(cfg *rest.Config) Dialer {
	return func(ctx context.Context, namespace, vmi string, port uint32) (net.Conn, error) {
		q := url.Values{"port": {strconv.FormatUint(uint64(port), 10)}, "tls": {"false"}}
		type result struct {
			s   kvcorev1.StreamInterface
			err error
		}
		got := make(chan result, 1)
		go func() {
			s, err := kvcorev1.AsyncSubresourceHelper(cfg, "virtualmachineinstances", namespace, vmi, "vsock", q)
			got <- result{s, err}
		}()
		select {
		case r := <-got:
			if r.err != nil {
				return nil, fmt.Errorf("vsock port %d of %s/%s through the API server: %w", port, namespace, vmi, r.err)
			}
			return r.s.AsConn(), nil
		case <-ctx.Done():
			go func() { // the dial ends on its own; its stream is not wanted
				if r := <-got; r.err == nil {
					r.s.AsConn().Close()
				}
			}()
			return nil, context.Cause(ctx)
		}
	}
}

// Machine is an instance's guest as a KubeVirt VirtualMachine: Start
// creates it (and its cloud-init Secret) when it is not there and runs
// it, Stop halts it; the VM, its disk and its Secret stay until Delete.
type Machine struct {
	machine.Lifecycle
	client dynamic.Interface
	spec   Spec
	seed   *corev1.Secret
	dial   Dialer
	// Poll is how often the VMI's phase is read while waiting for it.
	Poll time.Duration
	stop context.CancelFunc // ends watch
	// relay opens the guest's relay sessions (relay.go); nil for a
	// Machine made only to delete.
	relay *relay
}

var _ machine.Machine = (*Machine)(nil)

// New returns the Machine of spec, seeded by userData and networkData
// (the NoCloud seed cowork makes for every backend), reached through dial.
func New(client dynamic.Interface, s Spec, userData, networkData []byte, dial Dialer) (*Machine, error) {
	if err := s.Check(); err != nil {
		return nil, err
	}
	return &Machine{client: client, spec: s, seed: CloudInit(s, userData, networkData), dial: dial, Poll: time.Second, stop: func() {}}, nil
}

// Backend names the hypervisor for `cowork status`.
func (m *Machine) Backend() (name, accel string) { return "kubevirt", "" }

func (m *Machine) vms() dynamic.ResourceInterface {
	return m.client.Resource(vmResource).Namespace(m.spec.Namespace)
}

func (m *Machine) vmis() dynamic.ResourceInterface {
	return m.client.Resource(vmiResource).Namespace(m.spec.Namespace)
}

// Start makes sure the Secret and the VM exist, sets the VM running and
// waits until KubeVirt reports its VMI Running. The agent is then the
// caller's to wait for, as with every backend.
func (m *Machine) Start(ctx context.Context) error {
	if err := m.apply(ctx); err != nil {
		m.Fail(err)
		return err
	}
	patch := []byte(`{"spec":{"runStrategy":"` + string(kvv1.RunStrategyAlways) + `"}}`)
	if _, err := m.vms().Patch(ctx, m.spec.Name(), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		err = fmt.Errorf("run VirtualMachine %s/%s: %w", m.spec.Namespace, m.spec.Name(), err)
		m.Fail(err)
		return err
	}
	if err := m.waitRunning(ctx); err != nil {
		m.Fail(err)
		return err
	}
	m.SetState(machine.Running)
	wctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	go m.watch(wctx)
	return nil
}

// apply creates the Secret and the VM, or updates the Secret and checks
// that the VM of that name is this instance's. A clone's VM is made only
// once its source can be cloned (checkSource), and nothing is written
// before.
func (m *Machine) apply(ctx context.Context) error {
	checked := false
	if m.spec.CloneOf != "" {
		_, err := m.vms().Get(ctx, m.spec.Name(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			if err := m.checkSource(ctx); err != nil {
				return err
			}
			checked = true
		case err != nil: // not known to be there: never made unchecked
			return fmt.Errorf("read VirtualMachine %s/%s: %w", m.spec.Namespace, m.spec.Name(), err)
		}
	}
	sec, err := toUnstructured(m.seed)
	if err != nil {
		return err
	}
	secrets := m.client.Resource(secretResource).Namespace(m.spec.Namespace)
	_, err = secrets.Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		old, gerr := secrets.Get(ctx, sec.GetName(), metav1.GetOptions{})
		if gerr != nil {
			return fmt.Errorf("read Secret %s/%s: %w", m.spec.Namespace, sec.GetName(), gerr)
		}
		if err := m.ours(old, "Secret"); err != nil {
			return err
		}
		sec.SetResourceVersion(old.GetResourceVersion())
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("write Secret %s/%s: %w", m.spec.Namespace, sec.GetName(), err)
	}
	old, err := m.vms().Get(ctx, m.spec.Name(), metav1.GetOptions{})
	if err == nil {
		return m.ours(old, "VirtualMachine")
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("read VirtualMachine %s/%s: %w", m.spec.Namespace, m.spec.Name(), err)
	}
	if m.spec.CloneOf != "" && !checked { // there a moment ago, gone since
		if err := m.checkSource(ctx); err != nil {
			return err
		}
	}
	vm, err := VirtualMachine(m.spec)
	if err != nil {
		return err
	}
	u, err := toUnstructured(vm)
	if err != nil {
		return err
	}
	if _, err := m.vms().Create(ctx, u, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create VirtualMachine %s/%s: %w", m.spec.Namespace, m.spec.Name(), err)
	}
	return nil
}

// ours refuses an object of the instance's name that cowork did not make
// for this instance: it is never overwritten, run or deleted.
func (m *Machine) ours(u *unstructured.Unstructured, kind string) error {
	l := u.GetLabels()
	if l[LabelManagedBy] != managedBy || l[LabelInstance] != m.spec.Instance {
		return fmt.Errorf("%s %s/%s exists and is not cowork's instance %s (its labels: %v); remove it or choose another --name", kind, m.spec.Namespace, u.GetName(), m.spec.Instance, l)
	}
	return nil
}

// phase is the VMI's phase; "" when there is none.
func (m *Machine) phase(ctx context.Context) (kvv1.VirtualMachineInstancePhase, string, error) {
	u, err := m.vmis().Get(ctx, m.spec.Name(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
	reason, _, _ := unstructured.NestedString(u.Object, "status", "reason")
	return kvv1.VirtualMachineInstancePhase(phase), reason, nil
}

func (m *Machine) waitRunning(ctx context.Context) error {
	t := time.NewTicker(m.Poll)
	defer t.Stop()
	for {
		p, reason, err := m.phase(ctx)
		switch {
		case err != nil:
			return fmt.Errorf("read VirtualMachineInstance %s/%s: %w", m.spec.Namespace, m.spec.Name(), err)
		case p == kvv1.Running:
			return nil
		case p == kvv1.Failed || p == kvv1.Succeeded:
			return fmt.Errorf("VirtualMachineInstance %s/%s ended before it ran (phase %s%s); `kubectl -n %s describe vmi %s` says why", m.spec.Namespace, m.spec.Name(), p, because(reason), m.spec.Namespace, m.spec.Name())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("VirtualMachineInstance %s/%s is not running (phase %q): %w", m.spec.Namespace, m.spec.Name(), p, context.Cause(ctx))
		case <-t.C:
		}
	}
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return ", " + reason
}

// watch reports the VMI's end that nobody asked for: it went, or ended.
func (m *Machine) watch(ctx context.Context) {
	t := time.NewTicker(m.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p, reason, err := m.phase(ctx)
		switch {
		case err != nil:
			continue // the API server may be away a while; the VM is not
		case p == "":
			m.Exit(fmt.Errorf("VirtualMachineInstance %s/%s is gone", m.spec.Namespace, m.spec.Name()))
			return
		case p == kvv1.Failed || p == kvv1.Succeeded:
			m.Exit(fmt.Errorf("VirtualMachineInstance %s/%s ended (phase %s%s)", m.spec.Namespace, m.spec.Name(), p, because(reason)))
			return
		}
	}
}

// Stop halts the VM: KubeVirt asks the guest to power off and gives it
// its termination grace period; with timeout 0, or once timeout has
// passed, its VMI is deleted at once (the power cut). The VM, its disk
// and its Secret stay.
func (m *Machine) Stop(ctx context.Context, timeout time.Duration) error {
	m.MarkStopping()
	m.stop()
	// Only this instance's VM is halted, and its VMI cut: hostd stops the
	// machine after a failed boot, Start refused over another's VM of
	// the name included, and that one must go on running.
	vm, err := m.vms().Get(ctx, m.spec.Name(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		m.Exit(nil)
		return nil
	}
	if err == nil {
		err = m.ours(vm, "VirtualMachine")
	}
	if err != nil {
		return fmt.Errorf("halt VirtualMachine %s/%s: %w", m.spec.Namespace, m.spec.Name(), err)
	}
	patch := []byte(`{"spec":{"runStrategy":"` + string(kvv1.RunStrategyHalted) + `"}}`)
	if _, err := m.vms().Patch(ctx, m.spec.Name(), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("halt VirtualMachine %s/%s: %w", m.spec.Namespace, m.spec.Name(), err)
	}
	if timeout > 0 {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		err := m.waitGone(wctx)
		cancel()
		if err == nil {
			m.Exit(nil)
			return nil
		}
	}
	now := int64(0)
	if err := m.vmis().Delete(ctx, m.spec.Name(), metav1.DeleteOptions{GracePeriodSeconds: &now}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete VirtualMachineInstance %s/%s: %w", m.spec.Namespace, m.spec.Name(), err)
	}
	if err := m.waitGone(ctx); err != nil {
		return err
	}
	m.Exit(nil)
	return nil
}

func (m *Machine) waitGone(ctx context.Context) error {
	t := time.NewTicker(m.Poll)
	defer t.Stop()
	for {
		p, _, err := m.phase(ctx)
		if err == nil && (p == "" || p == kvv1.Succeeded || p == kvv1.Failed) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("VirtualMachineInstance %s/%s is still there: %w", m.spec.Namespace, m.spec.Name(), context.Cause(ctx))
		case <-t.C:
		}
	}
}

// DialAgent opens a channel to the guest agent's vsock port.
func (m *Machine) DialAgent(ctx context.Context) (net.Conn, error) {
	if m.State() != machine.Running {
		return nil, errors.New("the VM is not running")
	}
	return m.dial(ctx, m.spec.Namespace, m.spec.Name(), agentwire.VsockPort)
}

// Delete removes the instance's VM (and with it its VMI and its disk's
// DataVolume, which the VM owns) and its Secret. Objects of the name that
// are not this instance's are left alone.
func (m *Machine) Delete(ctx context.Context) error {
	var errs []error
	for _, r := range []struct {
		kind string
		res  dynamic.ResourceInterface
		name string
	}{
		{"VirtualMachine", m.vms(), m.spec.Name()},
		{"Secret", m.client.Resource(secretResource).Namespace(m.spec.Namespace), m.spec.CloudInitSecret()},
	} {
		u, err := r.res.Get(ctx, r.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err == nil {
			err = m.ours(u, r.kind)
		}
		if err == nil {
			// Foreground: the VM goes only once what it owns (its VMI,
			// its disk's DataVolume) has, so that the wait below covers
			// them. The UID: only the object looked at is deleted.
			fg, uid := metav1.DeletePropagationForeground, u.GetUID()
			err = r.res.Delete(ctx, r.name, metav1.DeleteOptions{PropagationPolicy: &fg, Preconditions: &metav1.Preconditions{UID: &uid}})
		}
		if err == nil {
			err = m.waitDeleted(ctx, r.res, r.name, u.GetUID())
		}
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s %s/%s: %w", r.kind, m.spec.Namespace, r.name, err))
		}
	}
	return errors.Join(errs...)
}

// waitDeleted waits until the object name of res with uid is gone:
// KubeVirt's finalizers keep a VM a while after its delete, and a new
// instance of the same name must not find it. Another object of that
// name (made meanwhile) is not waited for.
func (m *Machine) waitDeleted(ctx context.Context, res dynamic.ResourceInterface, name string, uid types.UID) error {
	for {
		u, err := res.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || err == nil && u.GetUID() != uid {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still there when the wait ended: %w", context.Cause(ctx))
		case <-time.After(m.Poll):
		}
	}
}

// toUnstructured is obj as the API server would hold it: through JSON,
// so that its numbers are int64 (the converter keeps a uint32 a uint64,
// which unstructured objects cannot copy).
func toUnstructured(obj runtime.Object) (*unstructured.Unstructured, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(b); err != nil {
		return nil, err
	}
	return u, nil
}
