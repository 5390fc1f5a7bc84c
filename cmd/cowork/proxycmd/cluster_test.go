package proxycmd

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/egresslog"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/syncbuf"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

// clusterInstance makes the default instance a kubevirt one, in
// namespace team-a of context kind-cowork.
func clusterInstance(t *testing.T) {
	t.Helper()
	instancetest.New(t, instance.Config{Backend: instance.BackendKubeVirt,
		Cluster: &instance.Cluster{Namespace: "team-a", Context: "kind-cowork", Image: "quay.io/containerdisks/ubuntu:22.04"}})
}

// fakeKubeVirtHostd makes $COWORK_HOSTD_KUBEVIRT a script that writes
// its arguments to the returned file, prints out, then runs then (a
// shell command: "exit 1", "exec sleep 60").
func fakeKubeVirtHostd(t *testing.T, out, then string) (args string) {
	t.Helper()
	dir := t.TempDir()
	bin, args, data := filepath.Join(dir, instance.KubeVirtHostd), filepath.Join(dir, "args"), filepath.Join(dir, "out")
	if err := os.WriteFile(data, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"$@\" > " + args + "\ncat " + data + "\n" + then + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv(cowork.KubeVirtHostdEnv, bin)
	return args
}

// lines is records as the log's JSON lines.
func lines(t *testing.T, recs ...*audit.Record) string {
	t.Helper()
	var b strings.Builder
	for _, r := range recs {
		j, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// A cluster instance's traffic is its namespace's egress log, read with
// cowork-hostd-kubevirt log: from --since on (asked of it, and kept to
// here as well), each record naming its client, damaged lines counted,
// and one line on stderr saying whose log it is.
func TestProxyOfAClusterInstance(t *testing.T) {
	clusterInstance(t)
	now := time.Now()
	args := fakeKubeVirtHostd(t, lines(t,
		&audit.Record{Time: now.Add(-2 * time.Hour), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "old.example", Client: "10.244.1.9:40000"},
		&audit.Record{Time: now.Add(-time.Minute), Kind: audit.KindConnect, Verdict: audit.Allow, Name: "recent.example", Dst: "198.51.100.2:443", Client: "10.244.1.7:40000"},
		&audit.Record{Time: now.Add(-time.Minute), Kind: audit.KindHTTP, Verdict: audit.Deny, Name: "10.0.0.1", Dst: "10.0.0.1:80", Rule: "private", Client: "10.244.1.8:40001"},
	)+"{not json\n", "exit 0")
	out, errOut, err := proxy(t, Options{Since: 10 * time.Minute})
	if err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(out, "ALLOW connect recent.example → 198.51.100.2:443") ||
		!strings.Contains(out, "  from 10.244.1.7\n") || !strings.Contains(out, "DENY  http    10.0.0.1 → 10.0.0.1:80  from 10.244.1.8  [private]") || strings.Contains(out, "old.example") {
		t.Errorf("since 10m:\n%s%v", out, err)
	}
	if want := "the audit log of the egress proxy of namespace team-a of context kind-cowork: the traffic of all its sandboxes, each record naming its client's address\n" +
		"cowork: skipped 1 damaged lines of the egress proxy's log\n"; errOut != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
	b, _ := os.ReadFile(args)
	a := strings.Fields(string(b))
	if len(a) != 5 || strings.Join(a[:4], " ") != "log --name sandbox --since" {
		t.Fatalf("cowork-hostd-kubevirt ran with %q", b)
	}
	if since, err := time.Parse(time.RFC3339Nano, a[4]); err != nil || since.Sub(now.Add(-10*time.Minute)).Abs() > time.Minute {
		t.Errorf("--since %s, want ten minutes ago: %v", a[4], err)
	}

	out, _, err = proxy(t, Options{Verbose: true, Follow: false})
	if err != nil || strings.Count(out, "\n") != 3 || !strings.Contains(out, "old.example") || !strings.Contains(out, "from 10.244.1.7:40000") {
		t.Errorf("all of it, verbose:\n%s%v", out, err)
	}
	if b, _ := os.ReadFile(args); string(b) != "log --name sandbox\n" {
		t.Errorf("all of it: cowork-hostd-kubevirt ran with %q", b)
	}
	out, _, err = proxy(t, Options{JSON: true, Since: 10 * time.Minute})
	if err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(out, `"client":"10.244.1.7:40000"`) {
		t.Errorf("--json:\n%s%v", out, err)
	}
}

// What the cluster sends is shown exactly as the same records of a local
// log are, sanitised alike: nothing the local path would not print.
func TestProxyOfAClusterShowsWhatALocalLogWould(t *testing.T) {
	recs := hostileRecords()
	recs = append(recs, &audit.Record{Time: time.Now(), Kind: audit.KindConnect, Verdict: audit.Allow, Name: "x", Client: termsafetest.Attack,
		ClaimedName: termsafetest.Attack, ClaimedFrom: audit.FromSNI, NameMismatch: true})
	p, _ := instancetest.New(t, instance.Config{})
	l, err := audit.Open(p.NetworkLog(), p.Audit())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	var local []string
	for _, o := range []Options{{Verbose: true}, {}, {JSON: true}} {
		out, _, err := proxy(t, o)
		if err != nil {
			t.Fatal(err)
		}
		local = append(local, out)
	}

	// As the egress pod sends them: the records it read of its log.
	var sent []*audit.Record
	if _, err := audit.Stream(context.Background(), p.NetworkLog(), time.Time{}, false, func(r *audit.Record) error {
		sent = append(sent, r)
		return nil
	}); err != nil || len(sent) != len(recs) {
		t.Fatalf("%d records, %v", len(sent), err)
	}
	clusterInstance(t)
	fakeKubeVirtHostd(t, lines(t, sent...), "exit 0")
	for i, o := range []Options{{Verbose: true}, {}, {JSON: true}} {
		out, _, err := proxy(t, o)
		if err != nil || strings.Count(out, "\n") < 3 {
			t.Fatalf("%+v: %q %v", o, out, err)
		}
		termsafetest.Check(t, "cowork proxy of a cluster instance", out, true)
		if out != local[i] {
			t.Errorf("%+v: the cluster's records show as\n%s\nthe same records of a local log as\n%s", o, out, local[i])
		}
	}
}

// --follow follows (cowork-hostd-kubevirt log --follow) until
// interrupted, which is no error; --ask keeps one ask's API calls; an
// exec's flows are named by no record of the cluster's, and --exec says
// so.
func TestProxyFollowsAClusterInstance(t *testing.T) {
	clusterInstance(t)
	const ask = "9b1e07c4d2a85f10"
	args := fakeKubeVirtHostd(t, lines(t,
		&audit.Record{Time: time.Now(), Kind: audit.KindRelay, Verdict: audit.Allow, Name: "api.example", Session: ask, URL: "/v1/messages", Client: "10.244.1.7:1"},
		&audit.Record{Time: time.Now(), Kind: audit.KindRelay, Verdict: audit.Allow, Name: "api.example", Session: "0123456789abcdef", URL: "/v1/other", Client: "10.244.1.8:1"},
	), "exec sleep 60")
	ios, _, _, errOut := iostreams.Test()
	var out syncbuf.Buffer
	ios.Out = &out
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, &Options{IO: ios, Name: instance.DefaultName, Follow: true, Ask: "9b1e07", Verbose: true})
	}()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), "session "+ask); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the record never showed: %q %q", out.String(), errOut.String())
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("an interrupted follow: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("proxy --follow of a cluster instance did not end when told to")
	}
	if strings.Contains(out.String(), "0123456789abcdef") {
		t.Errorf("--ask showed another ask's call:\n%s", out.String())
	}
	if b, _ := os.ReadFile(args); string(b) != "log --name sandbox --follow\n" {
		t.Errorf("cowork-hostd-kubevirt ran with %q", b)
	}
	if _, _, err := proxy(t, Options{Exec: "0123abcd"}); err == nil || !strings.Contains(err.Error(), "no record names an exec") {
		t.Errorf("--exec of a cluster instance: %v", err)
	}
}

// What cowork-hostd-kubevirt says when it cannot read the log is the
// error, naming where; one from another build says so; a line longer
// than a local log's longest is not shown, nor anything after it.
func TestProxyOfAClusterSaysWhyItCannot(t *testing.T) {
	clusterInstance(t)
	fakeKubeVirtHostd(t, "", "echo 'cowork-hostd-kubevirt: namespace team-a has no egress proxy pod running and ready; see `kubectl -n team-a get pods -l app.kubernetes.io/component=egress-proxy`' >&2; exit 1")
	_, _, err := proxy(t, Options{})
	if err == nil || !strings.Contains(err.Error(), "read the egress proxy's audit log of kubevirt, namespace team-a, context kind-cowork: namespace team-a has no egress proxy pod running and ready") {
		t.Errorf("no egress pod: %v", err)
	}
	fakeKubeVirtHostd(t, "", "echo 'unknown command \"log\"' >&2; exit 2")
	if _, _, err := proxy(t, Options{}); err == nil || !strings.Contains(err.Error(), "does not understand `log`") {
		t.Errorf("an older cowork-hostd-kubevirt: %v", err)
	}
	long := `{"time":"` + time.Now().UTC().Format(time.RFC3339Nano) + `","kind":"tcp","verdict":"allow","name":"` + strings.Repeat("a", 1<<20) + "\"}\n"
	fakeKubeVirtHostd(t, long+lines(t, &audit.Record{Time: time.Now(), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "after.example"}), "exit 0")
	out, _, err := proxy(t, Options{})
	if err == nil || strings.Contains(out, "aaaa") || strings.Contains(out, "after.example") {
		t.Errorf("a line over 1 MiB: %q, %v", out, err)
	}
}

// A record as long as the egress pod's log port passes on (a line of
// egresslog.MaxRecord bytes with its newline, as cowork-hostd-kubevirt
// log prints it) is shown, and the records after it: cowork takes the
// lines of cowork-hostd-kubevirt that long.
func TestProxyOfAClusterTakesTheLongestRecordSent(t *testing.T) {
	clusterInstance(t)
	head := `{"time":"` + time.Now().UTC().Format(time.RFC3339Nano) + `","kind":"tcp","verdict":"allow","name":"`
	long := head + strings.Repeat("a", egresslog.MaxRecord-1-len(head)-len(`"}`)) + "\"}\n"
	if len(long) != egresslog.MaxRecord {
		t.Fatalf("a line of %d bytes", len(long))
	}
	fakeKubeVirtHostd(t, long+lines(t, &audit.Record{Time: time.Now(), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "after.example"}), "exit 0")
	out, errOut, err := proxy(t, Options{JSON: true})
	if err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(out, "aaaa") || !strings.Contains(out, "after.example") || strings.Contains(errOut, "skipped") {
		t.Errorf("a record line of %d bytes: %.300q, %q, %v", len(long), out, errOut, err)
	}
}
