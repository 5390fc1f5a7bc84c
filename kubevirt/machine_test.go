package kubevirt

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/user"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/coworkhq/cowork/guestagent"
	"github.com/coworkhq/cowork/guestagent/listener"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentrpc"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/agentwire"
)

// cluster is a fake API server's store (client-go's fake dynamic client)
// and a stand-in for KubeVirt's controllers: a VM set running gets a VMI
// that goes Scheduling, then Running; a VM halted loses it.
type cluster struct {
	t      *testing.T
	client *dynamicfake.FakeDynamicClient
	ns     string
	stop   chan struct{}
	wg     sync.WaitGroup
}

func newCluster(t *testing.T, ns string, objs ...runtime.Object) *cluster {
	kinds := map[schema.GroupVersionResource]string{
		vmResource: "VirtualMachineList", vmiResource: "VirtualMachineInstanceList", secretResource: "SecretList",
		networkPolicyResource: "NetworkPolicyList", podResource: "PodList", dataVolumeResource: "DataVolumeList",
	}
	c := &cluster{t: t, client: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds, objs...), ns: ns, stop: make(chan struct{})}
	c.wg.Add(1)
	go c.control()
	t.Cleanup(func() { close(c.stop); c.wg.Wait() })
	return c
}

func (c *cluster) control() {
	defer c.wg.Done()
	ctx := context.Background()
	for {
		select {
		case <-c.stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
		vms, err := c.client.Resource(vmResource).Namespace(c.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			continue
		}
		for _, vm := range vms.Items {
			run, _, _ := unstructured.NestedString(vm.Object, "spec", "runStrategy")
			vmis := c.client.Resource(vmiResource).Namespace(c.ns)
			cur, err := vmis.Get(ctx, vm.GetName(), metav1.GetOptions{})
			switch {
			case run == "Always" && apierrors.IsNotFound(err):
				vmi := &unstructured.Unstructured{Object: map[string]any{
					"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
					"metadata": map[string]any{"name": vm.GetName(), "namespace": c.ns},
					"status":   map[string]any{"phase": "Scheduling"},
				}}
				vmis.Create(ctx, vmi, metav1.CreateOptions{})
			case run == "Always" && err == nil:
				if p, _, _ := unstructured.NestedString(cur.Object, "status", "phase"); p == "Scheduling" {
					unstructured.SetNestedField(cur.Object, "Running", "status", "phase")
					vmis.Update(ctx, cur, metav1.UpdateOptions{})
				}
			case run == "Halted" && err == nil:
				vmis.Delete(ctx, vm.GetName(), metav1.DeleteOptions{})
			}
		}
	}
}

// setPhase sets the VMI's phase as KubeVirt would when the guest ends.
func (c *cluster) setPhase(name, phase, reason string) {
	vmis := c.client.Resource(vmiResource).Namespace(c.ns)
	u, err := vmis.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	unstructured.SetNestedField(u.Object, phase, "status", "phase")
	unstructured.SetNestedField(u.Object, reason, "status", "reason")
	if _, err := vmis.Update(context.Background(), u, metav1.UpdateOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

// vsockServer is KubeVirt's vsock subresource as the API server serves
// it (a websocket of the plain.kubevirt.io protocol, binary frames), each
// stream joined to a real guest agent running in this process.
type vsockServer struct {
	*httptest.Server
	mu     sync.Mutex
	asked  []string // each stream's path and query
	agents chan net.Conn
}

func newVsockServer(t *testing.T) *vsockServer {
	return newVsockServerWith(t, guestagent.Options{SetClock: func(time.Time) error { return nil }})
}

// newVsockServerWith is newVsockServer with the agent's options: a test
// passes stand-ins for whatever of the guest it touches (its clock, its
// power switch, its provisioning).
func newVsockServerWith(t *testing.T, o guestagent.Options) *vsockServer {
	v := &vsockServer{agents: make(chan net.Conn)}
	l := &chanListener{conns: v.agents, done: make(chan struct{})}
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	o.Logger = log
	srv := guestagent.New(o)
	sniffed := listener.Sniff(l, log, listener.Handlers{Exec: srv.ServeExec, Call: srv.ServeCall})
	up := websocket.Upgrader{Subprotocols: []string{"plain.kubevirt.io"}}
	v.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.mu.Lock()
		v.asked = append(v.asked, r.URL.Path+"?"+r.URL.RawQuery)
		v.mu.Unlock()
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		host, guest := net.Pipe()
		v.agents <- guest
		go func() { // guest to client
			defer ws.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := host.Read(buf)
				if n > 0 && ws.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
					return
				}
				if err != nil {
					return
				}
			}
		}()
		go func() { // client to guest
			defer host.Close()
			for {
				_, b, err := ws.ReadMessage()
				if err != nil {
					return
				}
				if _, err := host.Write(b); err != nil {
					return
				}
			}
		}()
	}))
	t.Cleanup(func() { v.Close(); sniffed.Close(); srv.Stop() })
	return v
}

type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return &net.UnixAddr{Name: "vsock", Net: "unix"} }

// The instance's VM is made, run, reached through the vsock subresource
// by the same agent client hostd uses (a call and an exec, end to end),
// halted, and deleted.
func TestMachineRunsTheInstanceOnTheCluster(t *testing.T) {
	c := newCluster(t, "sandboxes")
	vs := newVsockServer(t)
	s := testSpec()
	m, err := New(c.client, s, []byte("#cloud-config\n"), []byte("version: 2\n"), SubresourceDialer(&rest.Config{Host: vs.URL}))
	if err != nil {
		t.Fatal(err)
	}
	m.Poll = 5 * time.Millisecond
	if _, err := m.DialAgent(context.Background()); err == nil {
		t.Fatal("dialed the agent of a VM not started")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if m.State() != machine.Running {
		t.Fatalf("state %s after Start", m.State())
	}
	sec, err := c.client.Resource(secretResource).Namespace("sandboxes").Get(ctx, "cowork-box-cloudinit", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ud, _, _ := unstructured.NestedString(sec.Object, "data", "userdata"); ud == "" {
		t.Fatalf("the seed Secret holds no user-data: %v", sec.Object)
	}

	rpc, _ := agentrpc.New(m.DialAgent)
	info, err := rpc.Info(ctx)
	if err != nil || info.Version == "" {
		t.Fatalf("the agent's info through the vsock subresource: %+v, %v", info, err)
	}
	ac, _ := agentclient.New(m.DialAgent)
	var out bytes.Buffer
	st, err := ac.Exec(ctx, agentclient.ExecOptions{Argv: []string{"/bin/sh", "-c", "echo hello from the cluster"}, User: currentUser(t), Dir: "/", Stdout: &out})
	if err != nil || st.Code != 0 || out.String() != "hello from the cluster\n" {
		t.Fatalf("exec through the vsock subresource: %+v %v %q", st, err, out.String())
	}
	vs.mu.Lock()
	asked := vs.asked[0]
	vs.mu.Unlock()
	if want := fmt.Sprintf("/apis/subresources.kubevirt.io/v1/namespaces/sandboxes/virtualmachineinstances/cowork-box/vsock?port=%d&tls=false", agentwire.VsockPort); asked != want {
		t.Errorf("the stream asked for %s, want %s", asked, want)
	}

	if err := m.Stop(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if m.Err() != nil || m.State() != machine.Stopped {
		t.Fatalf("after Stop: %s %v", m.State(), m.Err())
	}
	if _, err := c.client.Resource(vmiResource).Namespace("sandboxes").Get(ctx, "cowork-box", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("Stop returned with the VMI still there: %v", err)
	}
	vm, err := c.client.Resource(vmResource).Namespace("sandboxes").Get(ctx, "cowork-box", metav1.GetOptions{})
	if err != nil {
		t.Fatal("Stop removed the VM: its disk goes with it")
	}
	if run, _, _ := unstructured.NestedString(vm.Object, "spec", "runStrategy"); run != "Halted" {
		t.Fatalf("runStrategy %q after Stop", run)
	}

	// A second Start of the same instance runs the VM that is there.
	m2, _ := New(c.client, s, []byte("#cloud-config\n"), []byte("version: 2\n"), SubresourceDialer(&rest.Config{Host: vs.URL}))
	m2.Poll = 5 * time.Millisecond
	if err := m2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	m2.Stop(ctx, 0)
	if err := m2.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range []schema.GroupVersionResource{vmResource, secretResource} {
		if l, _ := c.client.Resource(r).Namespace("sandboxes").List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
			t.Errorf("%s left after Delete: %v", r.Resource, l.Items)
		}
	}
}

// A VMI that ends on its own (the guest powered off, the node went) is
// the VM's end, and says so.
func TestMachineSeesItsVMIEnd(t *testing.T) {
	c := newCluster(t, "sandboxes")
	m, _ := New(c.client, testSpec(), nil, nil, nil)
	m.Poll = 5 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c.setPhase("cowork-box", "Failed", "NodeUnresponsive")
	select {
	case <-m.Done():
	case <-ctx.Done():
		t.Fatal("the VMI's end went unnoticed")
	}
	if err := m.Err(); err == nil || !strings.Contains(err.Error(), "ended (phase Failed, NodeUnresponsive)") {
		t.Fatalf("Err: %v", err)
	}
}

// Objects of the instance's names that cowork did not make for it are
// never run, overwritten or deleted.
func TestMachineLeavesOthersObjectsAlone(t *testing.T) {
	foreign := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
		"metadata": map[string]any{"name": "cowork-box", "namespace": "sandboxes", "labels": map[string]any{"team": "db"}},
		"spec":     map[string]any{"runStrategy": "Always"},
	}}
	c := newCluster(t, "sandboxes", foreign)
	m, _ := New(c.client, testSpec(), nil, nil, nil)
	m.Poll = 5 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for { // another's VM, running
		vmi, err := c.client.Resource(vmiResource).Namespace("sandboxes").Get(ctx, "cowork-box", metav1.GetOptions{})
		if err == nil {
			if p, _, _ := unstructured.NestedString(vmi.Object, "status", "phase"); p == "Running" {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatal("another's VM did not run")
		}
		time.Sleep(5 * time.Millisecond)
	}
	err := m.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "VirtualMachine sandboxes/cowork-box exists and is not cowork's instance box") {
		t.Fatalf("Start over another's VM: %v", err)
	}
	if !errors.Is(m.Err(), err) && m.Err() == nil {
		t.Fatalf("a failed Start leaves the machine failed: %v", m.Err())
	}
	// hostd stops the machine of a failed boot: another's VM goes on.
	if err := m.Stop(ctx, 0); err == nil || !strings.Contains(err.Error(), "is not cowork's instance box") {
		t.Fatalf("Stop of another's VM: %v", err)
	}
	if err := m.Delete(ctx); err == nil {
		t.Fatal("Delete removed another's VM")
	}
	vm, err := c.client.Resource(vmResource).Namespace("sandboxes").Get(ctx, "cowork-box", metav1.GetOptions{})
	if err != nil {
		t.Fatal("another's VM is gone")
	}
	if run, _, _ := unstructured.NestedString(vm.Object, "spec", "runStrategy"); run != "Always" {
		t.Fatalf("another's VM was set %q", run)
	}
	if _, err := c.client.Resource(vmiResource).Namespace("sandboxes").Get(ctx, "cowork-box", metav1.GetOptions{}); err != nil {
		t.Fatalf("another's running VMI was cut: %v", err)
	}
}

// A VMI that fails before it runs ends Start with KubeVirt's reason and
// what to run to see more.
func TestMachineStartFailsWithTheReason(t *testing.T) {
	c := newCluster(t, "sandboxes")
	close(c.stop) // no controller: the test plays it
	c.wg.Wait()
	c.stop = make(chan struct{})
	m, _ := New(c.client, testSpec(), nil, nil, nil)
	m.Poll = 5 * time.Millisecond
	go func() {
		vmis := c.client.Resource(vmiResource).Namespace("sandboxes")
		for {
			vmi := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
				"metadata": map[string]any{"name": "cowork-box", "namespace": "sandboxes"},
				"status":   map[string]any{"phase": "Failed", "reason": "ErrImagePull"},
			}}
			if _, err := vmis.Create(context.Background(), vmi, metav1.CreateOptions{}); err == nil || apierrors.IsAlreadyExists(err) {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "ended before it ran (phase Failed, ErrImagePull); `kubectl -n sandboxes describe vmi cowork-box` says why") {
		t.Fatalf("%v", err)
	}
}

func currentUser(t *testing.T) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// The seed is the instance's own: a Secret of its name that is another's
// is refused, one that cannot be written ends Start, and a second Start
// writes the seed it is given over the instance's last one.
func TestMachineSeedSecret(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	foreign := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": "cowork-box-cloudinit", "namespace": "sandboxes"},
		"data":     map[string]any{"userdata": "c2VjcmV0"},
	}}
	c := newCluster(t, "sandboxes", foreign)
	m, _ := New(c.client, testSpec(), []byte("#cloud-config\n"), nil, nil)
	m.Poll = 5 * time.Millisecond
	if err := m.Start(ctx); err == nil || !strings.Contains(err.Error(), "Secret sandboxes/cowork-box-cloudinit exists and is not cowork's") {
		t.Fatalf("Start over another's Secret: %v", err)
	}
	got, _ := c.client.Resource(secretResource).Namespace("sandboxes").Get(ctx, "cowork-box-cloudinit", metav1.GetOptions{})
	if ud, _, _ := unstructured.NestedString(got.Object, "data", "userdata"); ud != "c2VjcmV0" {
		t.Fatalf("another's Secret was overwritten: %v", got.Object)
	}

	c = newCluster(t, "sandboxes")
	c.client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(secretResource.GroupResource(), "cowork-box-cloudinit", errors.New("RBAC: no create"))
	})
	m, _ = New(c.client, testSpec(), []byte("#cloud-config\n"), nil, nil)
	m.Poll = 5 * time.Millisecond
	if err := m.Start(ctx); err == nil || !strings.Contains(err.Error(), "write Secret sandboxes/cowork-box-cloudinit") || !strings.Contains(err.Error(), "RBAC: no create") {
		t.Fatalf("Start with a Secret it cannot write: %v", err)
	}
	if l, _ := c.client.Resource(vmResource).Namespace("sandboxes").List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Fatal("a VM was made without its seed")
	}

	c = newCluster(t, "sandboxes")
	for _, ud := range []string{"#cloud-config\nfirst: 1\n", "#cloud-config\nsecond: 2\n"} {
		m, _ = New(c.client, testSpec(), []byte(ud), nil, nil)
		m.Poll = 5 * time.Millisecond
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		m.Stop(ctx, 0)
	}
	got, _ = c.client.Resource(secretResource).Namespace("sandboxes").Get(ctx, "cowork-box-cloudinit", metav1.GetOptions{})
	if ud, _, _ := unstructured.NestedString(got.Object, "data", "userdata"); ud != base64.StdEncoding.EncodeToString([]byte("#cloud-config\nsecond: 2\n")) {
		t.Fatalf("the second Start's seed was not written: %q", ud)
	}
}

// Delete returns once the VM is gone, not when its delete is accepted:
// KubeVirt's finalizers keep a VM a while, and an init of the same name
// right after must not find it.
func TestDeleteWaitsForTheVMToGo(t *testing.T) {
	c := newCluster(t, "sandboxes")
	m, err := New(c.client, testSpec(), []byte("#cloud-config\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Poll = 5 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.apply(ctx); err != nil {
		t.Fatal(err)
	}
	const linger = 150 * time.Millisecond
	c.client.PrependReactor("delete", "virtualmachines", func(a k8stesting.Action) (bool, runtime.Object, error) {
		name := a.(k8stesting.DeleteAction).GetName()
		time.AfterFunc(linger, func() {
			c.client.Tracker().Delete(vmResource, "sandboxes", name)
		})
		return true, nil, nil // accepted; gone later, as with a finalizer
	})
	began := time.Now()
	if err := m.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < linger {
		t.Errorf("Delete returned after %v, before the VM was gone (%v)", took, linger)
	}
	if _, err := c.client.Resource(vmResource).Namespace("sandboxes").Get(ctx, "cowork-box", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the VM is still there after Delete: %v", err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := m.apply(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(short); err == nil || !strings.Contains(err.Error(), "still there") {
		t.Errorf("a VM that outlives the wait: %v, want an error saying it is still there", err)
	}
}
