package proxycmd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/syncbuf"
)

// parse runs `cowork proxy args...` up to its Options.
func parse(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	name := "box"
	var got *Options
	cmd := NewCmdProxy(ios, &name, func(o *Options) error { got = o; return nil })
	cmdtest.Prepare(cmd, ios, args...)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	return got, cmd.Execute()
}

func TestProxyFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want Options
	}{
		{nil, Options{Name: "box", Since: 10 * time.Minute, Follow: true}},
		{[]string{"-l", "p.log", "-v", "--since", "1h"}, Options{Name: "box", LogFile: "p.log", Verbose: true, Since: time.Hour, Follow: true}},
		{[]string{"--json", "--follow=false", "--since", "0"}, Options{Name: "box", JSON: true}},
		{[]string{"-f=false", "--verbose", "--log", "x"}, Options{Name: "box", LogFile: "x", Verbose: true, Since: 10 * time.Minute}},
		{[]string{"--exec", "0123abcd"}, Options{Name: "box", Since: 10 * time.Minute, Follow: true, Exec: "0123abcd"}},
		{[]string{"--ask", "9b1e07"}, Options{Name: "box", Since: 10 * time.Minute, Follow: true, Ask: "9b1e07"}},
	} {
		o, err := parse(t, c.args...)
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if o.IO == nil {
			t.Errorf("%q: no streams", c.args)
		}
		o.IO = nil
		if *o != c.want {
			t.Errorf("%q: %+v, want %+v", c.args, *o, c.want)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--since", "-5m"}, "--since -5m0s: want how long ago to start"},
		{[]string{"--since", "soon"}, `invalid argument "soon" for "--since"`},
		{[]string{"box"}, `unknown command "box" for "proxy"`},
		{[]string{"--exec", "xyz!"}, `--exec "xyz!": want an exec id`},
		{[]string{"--exec", "abc"}, `--exec "abc": want an exec id`},
		{[]string{"--ask", "9B1E07"}, `--ask "9B1E07": want an ask's id`},
		{[]string{"--ask", "0123abcd", "--exec", "0123abcd"}, `--exec and --ask: give one`},
	} {
		o, err := parse(t, c.args...)
		if o != nil || cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %+v %v (exit %d), want a one-line usage error saying %q", c.args, o, err, cmdutil.ExitCode(err), c.want)
		}
	}
}

// withLog makes an instance whose audit log holds an old flow, two recent
// ones and a DNS query, and a damaged line; it returns its paths.
func withLog(t *testing.T) instance.Paths {
	t.Helper()
	p, _ := instancetest.New(t, instance.Config{})
	l, err := audit.Open(p.NetworkLog(), p.Audit())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, r := range []*audit.Record{
		{Time: now.Add(-2 * time.Hour), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "old.example", Dst: "198.51.100.1:443"},
		{Time: now.Add(-time.Minute), Kind: audit.KindDNS, Verdict: audit.Allow, Name: "recent.example", QType: "A", RCode: "NOERROR", Rule: "dns"},
		{Time: now.Add(-time.Minute), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "recent.example", Dst: "198.51.100.2:443", Rule: "default"},
		{Time: now.Add(-time.Minute), Kind: audit.KindTCP, Verdict: audit.Deny, Dst: "10.0.0.1:22", Rule: "private network"},
	} {
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	f, err := os.OpenFile(p.NetworkLog(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("{not json\n")
	f.Close()
	return p
}

// proxy runs o on fresh streams until it returns.
func proxy(t *testing.T, o Options) (out, errOut string, err error) {
	t.Helper()
	ios, _, outB, errB := iostreams.Test()
	o.IO = ios
	if o.Name == "" {
		o.Name = instance.DefaultName
	}
	err = run(context.Background(), &o)
	return outB.String(), errB.String(), err
}

// The log is shown from --since on, DNS only with -v, and each damaged
// line is counted, not shown.
func TestProxyShowsTheLog(t *testing.T) {
	p := withLog(t)
	out, errOut, err := proxy(t, Options{Since: 10 * time.Minute})
	if err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(out, "ALLOW tcp     recent.example → 198.51.100.2:443") ||
		!strings.Contains(out, "DENY  tcp     - → 10.0.0.1:22") || strings.Contains(out, "old.example") || strings.Contains(out, " dns ") {
		t.Errorf("since 10m:\n%s%v", out, err)
	}
	if errOut != "cowork: skipped 1 damaged lines of "+p.NetworkLog()+"\n" {
		t.Errorf("stderr %q", errOut)
	}

	out, _, err = proxy(t, Options{Verbose: true})
	if err != nil || strings.Count(out, "\n") != 4 || !strings.Contains(out, "old.example") || !strings.Contains(out, "recent.example A NOERROR") {
		t.Errorf("all of it, verbose:\n%s%v", out, err)
	}

	out, _, err = proxy(t, Options{JSON: true, Since: 10 * time.Minute})
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if err != nil || len(lines) != 3 {
		t.Fatalf("--json:\n%s%v", out, err)
	}
	for _, line := range lines {
		if r, err := audit.ParseLine([]byte(line)); err != nil || r.Time.Before(time.Now().Add(-10*time.Minute)) {
			t.Errorf("--json line %q: %+v %v", line, r, err)
		}
	}
}

// --exec keeps the records whose owner is of that exec, by its id or the
// id's beginning; -v shows the owner.
func TestProxyShowsOneExec(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	l, err := audit.Open(p.NetworkLog(), p.Audit())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	owner := func(exec string, pid int) *audit.Owner {
		return &audit.Owner{Exec: exec, PID: pid, Comm: "curl", ClaimedBy: audit.ClaimedByGuest}
	}
	for _, r := range []*audit.Record{
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Allow, Name: "one.example", Dst: "198.51.100.1:443", Owner: owner("0123456789abcdef", 11)},
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Allow, Name: "two.example", Dst: "198.51.100.2:443", Owner: owner("fedcba9876543210", 22)},
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Deny, Name: "nobody.example", Dst: "198.51.100.3:443"},
		{Time: now, Kind: audit.KindDNS, Verdict: audit.Allow, Name: "one.example", QType: "A", Owner: owner("0123456789abcdef", 11)},
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Allow, Name: "short.example", Dst: "198.51.100.4:443", Owner: owner("0123", 33)},
	} {
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	out, _, err := proxy(t, Options{Exec: "0123456789abcdef", Verbose: true})
	if err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(out, "one.example → 198.51.100.1:443") ||
		!strings.Contains(out, "by curl[11] exec 0123456789abcdef") || !strings.Contains(out, "one.example A") {
		t.Errorf("--exec 0123456789abcdef:\n%s%v", out, err)
	}
	out, _, err = proxy(t, Options{Exec: "0123", JSON: true})
	if err != nil || strings.Count(out, "\n") != 2 || strings.Contains(out, "short.example") || strings.Contains(out, "two.example") {
		t.Errorf("--exec 0123 --json, which no id of 4 digits matches:\n%s%v", out, err)
	}
}

// -l appends what is shown to a file, and keeps what it held.
func TestProxyAlsoWritesTheLogFile(t *testing.T) {
	withLog(t)
	file := filepath.Join(t.TempDir(), "proxy.log")
	os.WriteFile(file, []byte("before\n"), 0o600)
	out, _, err := proxy(t, Options{LogFile: file, Since: 10 * time.Minute})
	b, _ := os.ReadFile(file)
	if err != nil || out == "" || string(b) != "before\n"+out {
		t.Errorf("file %q, stdout %q, %v", b, out, err)
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("colour in a log file: %q", out)
	}
}

// With --follow, new records show as they are written, until the command
// is told to end.
func TestProxyFollows(t *testing.T) {
	p := withLog(t)
	ios, _, _, _ := iostreams.Test()
	var out syncbuf.Buffer
	ios.Out = &out
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, &Options{IO: ios, Name: instance.DefaultName, Since: 10 * time.Minute, Follow: true})
	}()

	// What the log held is shown first; only then is a record added, which
	// only a run that follows the log can see.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "recent.example → 198.51.100.2:443") {
		if time.Now().After(deadline) {
			t.Fatalf("the log's records never showed:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	l, err := audit.Open(p.NetworkLog(), p.Audit())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Write(&audit.Record{Kind: audit.KindTCP, Verdict: audit.Deny, Name: "late.example", Dst: "203.0.113.9:443", Rule: "deny late.example"})
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "late.example → 203.0.113.9:443") {
		if time.Now().After(deadline) {
			t.Fatalf("a new record never showed:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("proxy --follow did not end when told to")
	}
}

func TestProxyOfAMissingInstance(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	if _, _, err := proxy(t, Options{}); cmdutil.ExitCode(err) != 1 || !strings.Contains(err.Error(), "instance sandbox does not exist") {
		t.Errorf("%v", err)
	}
}

// --runs reads the throwaway runs' log: a run's records marked with its
// id, and its RUN line, whose command (the user's, or a prompt piped in)
// and error are printed inert.
func TestProxyShowsTheRuns(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	now := time.Now().UTC().Format(time.RFC3339Nano)
	log := `{"time":"` + now + `","kind":"tcp","verdict":"allow","name":"pypi.org","dst":"151.101.0.223:443","bytes_out":10,"bytes_in":20,"run_id":"0a1b2c3d"}
{"time":"` + now + `","kind":"run","verdict":"","duration_ms":1234,"run_id":"0a1b2c3d","error":"boom\u001b[2J","run_info":{"instance":"box-rm-0a1b2c3d","snapshot":"base","ready":"warm","what":"exec","command":"pip install x\u001b]0;owned\u0007","exit_code":2,"network":{"flows":1,"blocked":0,"dns_queries":1,"bytes_out":10,"bytes_in":20}}}
`
	if err := os.WriteFile(p.Runs(), []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := proxy(t, Options{Runs: true})
	if err != nil || errOut != "" || strings.Count(out, "\n") != 2 {
		t.Fatalf("--runs:\n%s%s%v", out, errOut, err)
	}
	if !strings.HasPrefix(out, "0a1b2c3d ") || !strings.Contains(out, "ALLOW tcp     pypi.org → 151.101.0.223:443") {
		t.Errorf("the run's flow:\n%s", out)
	}
	for _, want := range []string{"0a1b2c3d", "RUN   exec", "exit 2", "in 1.23s (warm clone box-rm-0a1b2c3d of snapshot base)", "1 flows, 0 blocked, 1 DNS"} {
		if !strings.Contains(out, want) {
			t.Errorf("the RUN line lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("control characters reached the terminal: %q", out)
	}
	if out, _, _ := proxy(t, Options{}); out != "" {
		t.Errorf("without --runs the instance's own log (empty) is shown, got:\n%s", out)
	}
}

// --ask keeps an ask's API calls, by their relay session (the host's
// account), and the flows the guest says processes under its claude
// opened, by their owner's exec, which is named after the session.
func TestProxyShowsOneAsk(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	l, err := audit.Open(p.NetworkLog(), p.Audit())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	const ask, other = "9b1e07c4d2a85f10", "0123456789abcdef"
	owner := func(exec string) *audit.Owner {
		return &audit.Owner{Exec: exec, PID: 7, Comm: "node", ClaimedBy: audit.ClaimedByGuest}
	}
	for _, r := range []*audit.Record{
		{Time: now, Kind: audit.KindRelay, Verdict: audit.Allow, Name: "api.example", Session: ask, URL: "/v1/messages"},
		{Time: now, Kind: audit.KindRelay, Verdict: audit.Allow, Name: "api.example", Session: other, URL: "/v1/other"},
		{Time: now, Kind: audit.KindHTTP, Verdict: audit.Allow, Name: "pypi.example", Dst: "198.51.100.1:80", Owner: owner(ask)},
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Allow, Name: "elsewhere.example", Dst: "198.51.100.2:443", Owner: owner(other)},
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Deny, Name: "nobody.example", Dst: "198.51.100.3:443"},
	} {
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	out, _, err := proxy(t, Options{Ask: "9b1e07", JSON: true})
	if err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(out, "/v1/messages") || !strings.Contains(out, "pypi.example") {
		t.Errorf("--ask 9b1e07:\n%s%v", out, err)
	}
}

// A cluster instance's runs log is this machine's, and shown: its
// throwaway runs' lines say their clone's disk was its own, cloned in
// the cluster. Its traffic is the namespace's egress proxy's, read
// through cowork-hostd-kubevirt (cluster_test.go), here missing.
func TestProxyShowsAClusterInstancesRuns(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{Backend: instance.BackendKubeVirt, Cluster: &instance.Cluster{Namespace: "team-a", Image: "quay.io/containerdisks/ubuntu:22.04"}})
	now := time.Now().UTC().Format(time.RFC3339Nano)
	log := `{"time":"` + now + `","kind":"run","verdict":"","duration_ms":40000,"run_id":"0a1b2c3d","run_info":{"instance":"sandbox-rm-0a1b2c3d","ready":"cold","what":"exec","command":"make test","exit_code":0,"network":{"flows":0,"blocked":0,"dns_queries":0,"bytes_out":0,"bytes_in":0}}}
`
	if err := os.WriteFile(p.Runs(), []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := proxy(t, Options{Runs: true})
	if err != nil || errOut != "" || !strings.Contains(out, "RUN   exec \"make test\" exit 0 in 40s (cold clone sandbox-rm-0a1b2c3d of its parent's disk, in the cluster)") {
		t.Fatalf("--runs of a cluster instance:\n%s%s%v", out, errOut, err)
	}
	t.Setenv(cowork.KubeVirtHostdEnv, filepath.Join(t.TempDir(), "missing"))
	if _, _, err := proxy(t, Options{}); err == nil || !strings.Contains(err.Error(), "$"+cowork.KubeVirtHostdEnv) {
		t.Errorf("the traffic of a cluster instance: %v", err)
	}
}
