package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/coworkhq/cowork/hostd/egresslog/egresslogtest"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/internal/syncbuf"
	"github.com/coworkhq/cowork/kubevirt"
)

// egressCluster is a cluster whose namespace team-a runs a ready egress
// pod, whose log port is a real log server in the test (a "port-forward"
// to pod team-a/cowork-egress-1, port 7893, dials it); the log is
// returned to write to.
func egressCluster(t *testing.T) (connector, *audit.Log) {
	t.Helper()
	addr, al := egresslogtest.Start(t)
	pod := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "cowork-egress-1", "namespace": "team-a", "labels": map[string]any{
			kubevirt.LabelManagedBy: "cowork", kubevirt.LabelComponent: "egress-proxy"}},
		"status": map[string]any{"phase": "Running", "conditions": []any{map[string]any{"type": "Ready", "status": "True"}}},
	}}
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{{Version: "v1", Resource: "pods"}: "PodList"}, pod)
	forward := func(ctx context.Context, ns, name string, port int) (net.Conn, error) {
		if ns != "team-a" || name != "cowork-egress-1" || port != kubevirt.LogPort {
			t.Errorf("port-forward to %s/%s port %d", ns, name, port)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	return func(kubeContext string) (kubevirt.Backend, error) {
		if kubeContext != "kind-cowork" {
			t.Errorf("reached context %q, want the instance's", kubeContext)
		}
		return kubevirt.Backend{Client: client, Forward: forward}, nil
	}, al
}

// log copies the namespace's egress log to stdout, one record a JSON
// line and nothing else, from --since on; with --follow it goes on until
// interrupted, and ends with exit 0.
func TestLogCopiesTheEgressLog(t *testing.T) {
	writeInstance(t, kubeConfig("box"))
	reach, al := egressCluster(t)
	now := time.Now()
	al.Write(&audit.Record{Time: now.Add(-2 * time.Hour), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "old.example", Client: "10.244.1.7:4000"})
	al.Write(&audit.Record{Time: now.Add(-time.Minute), Kind: audit.KindHTTP, Verdict: audit.Deny, Name: "recent.example\x1b[2J", Client: "10.244.1.8:4000"})

	code, out, errOut := runMain(reach, "log", "--name", "box", "--since", now.Add(-10*time.Minute).UTC().Format(time.RFC3339))
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || errOut != "" || len(lines) != 1 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	r, err := audit.ParseLine([]byte(lines[0]))
	if err != nil || r.Name != "recent.example\x1b[2J" || r.Client != "10.244.1.8:4000" || strings.ContainsRune(lines[0], '\x1b') {
		t.Errorf("the record %q: %+v, %v", lines[0], r, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() { done <- Main(ctx, []string{"log", "--name", "box", "--follow"}, &stdout, &stderr, reach) }()
	al.Write(&audit.Record{Kind: audit.KindTCP, Verdict: audit.Allow, Name: "late.example"})
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(stdout.String(), "late.example"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a record written while followed never showed: %q %q", stdout.String(), stderr.String())
		}
	}
	if n := strings.Count(stdout.String(), "\n"); n != 3 {
		t.Errorf("following from the start: %d lines, want 3:\n%s", n, stdout.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 || stderr.String() != "" {
			t.Errorf("an interrupted follow: exit %d, stderr %q", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("log --follow did not end when interrupted")
	}
}

// A command line log cannot use is a usage error; a log it cannot read
// is exit 1 with one line saying what to do.
func TestLogRefusesWhatItCannotDo(t *testing.T) {
	for _, args := range [][]string{{"log"}, {"log", "--name", "box", "--since", "yesterday"}, {"log", "--name", "box", "stray"}} {
		if code, out, errOut := runMain(unreachable, args...); code != hostdwire.ExitUsage || out != "" || errOut == "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	writeInstance(t, kubeConfig("box"))
	reach, _ := egressCluster(t)
	hangsUp := func(kubeContext string) (kubevirt.Backend, error) {
		b, err := reach(kubeContext)
		b.Forward = func(context.Context, string, string, int) (net.Conn, error) {
			here, there := net.Pipe()
			there.Close()
			return here, nil
		}
		return b, err
	}
	code, out, errOut := runMain(hangsUp, "log", "--name", "box")
	if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "answered nothing") || !strings.Contains(errOut, "kubectl apply -f -") {
		t.Errorf("a pod without the log port: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
