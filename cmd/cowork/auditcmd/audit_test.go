package auditcmd

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// run runs `cowork audit args...` on the instance box and returns its
// stdout and stderr.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ios, _, out, errOut := iostreams.Test()
	name := "box"
	cmd := cmdtest.Prepare(NewCmdAudit(ios, &name, nil), ios, args...)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

// newBox is the instance box with a network log of n records.
func newBox(t *testing.T, n int) instance.Paths {
	t.Helper()
	p, _ := instancetest.New(t, instance.Config{Name: "box"})
	l, err := audit.Open(p.NetworkLog(), p.Audit())
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := l.Write(&audit.Record{Kind: audit.KindDNS, Verdict: audit.Allow, Name: "pypi.org", QType: "A"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerifyAnIntactLog(t *testing.T) {
	newBox(t, 12)
	out, errOut, err := run(t, "verify")
	if err != nil || out != "ok: 12 records, seq 1..12, across 1 file\n" || errOut != "" {
		t.Fatalf("%q %q %v", out, errOut, err)
	}
	out, _, err = run(t, "verify", "--json")
	var v cowork.AuditVerification
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || !v.OK || v.Records != 12 || v.LastSeq != 12 || v.HeadSeq != 12 ||
		len(v.Files) != 1 || v.Problems == nil {
		t.Fatalf("--json: %q %v", out, err)
	}
}

func TestVerifyNamesWhereTheLogWasChanged(t *testing.T) {
	p := newBox(t, 12)
	b, _ := os.ReadFile(p.NetworkLog())
	lines := bytes.SplitAfter(b, []byte("\n"))
	lines[4] = bytes.Replace(lines[4], []byte("pypi.org"), []byte("evil.org"), 1)
	os.WriteFile(p.NetworkLog(), bytes.Join(lines[:len(lines)-2], nil), 0o600) // and the last record cut
	out, errOut, err := run(t, "verify")
	want := "network.jsonl line 5 (seq 5): edited, or forged: its mac does not match the chain (the record before it and its own bytes)\n" +
		"network.jsonl: the log ends at seq 11 but audit.head says 12: record 12 was removed from its end\n"
	if cmdutil.ExitCode(err) != 1 || out != want || !strings.Contains(err.Error(), "the audit log of box fails verification: 2 problems") || errOut != "" {
		t.Fatalf("%q %q %v", out, errOut, err)
	}
	out, _, err = run(t, "verify", "--json")
	var v cowork.AuditVerification
	if cmdutil.ExitCode(err) != 1 || err.Error() != "exit status 1" || json.Unmarshal([]byte(out), &v) != nil || v.OK || len(v.Problems) != 2 ||
		v.Problems[0] != (cowork.AuditProblem{File: "network.jsonl", Line: 5, Seq: 5, Kind: audit.ProblemEdited, Message: "edited, or forged: its mac does not match the chain (the record before it and its own bytes)"}) {
		t.Fatalf("--json: %q %v", out, err)
	}
	// line and seq are left out of a problem of a file as a whole.
	var raw struct{ Problems []map[string]any }
	json.Unmarshal([]byte(out), &raw)
	if _, ok := raw.Problems[0]["line"]; !ok {
		t.Fatalf("no line: %v", raw.Problems[0])
	}
	if _, ok := raw.Problems[1]["seq"]; ok || raw.Problems[1]["kind"] != audit.ProblemTruncated {
		t.Fatalf("a seq: %v", raw.Problems[1])
	}
	if _, ok := raw.Problems[1]["line"]; ok {
		t.Fatalf("a line: %v", raw.Problems[1])
	}
}

func TestVerifyRefusals(t *testing.T) {
	instancetest.New(t, instance.Config{Name: "other"})
	if _, _, err := run(t, "verify"); err == nil || !strings.Contains(err.Error(), "instance box does not exist") {
		t.Fatalf("no instance: %v", err)
	}
	if _, _, err := run(t, "verify", "extra"); cmdutil.ExitCode(err) != 2 {
		t.Fatalf("an argument: %v", err)
	}
	if _, _, err := run(t, "check"); cmdutil.ExitCode(err) != 2 {
		t.Fatalf("an unknown verb: %v", err)
	}
	p := newBox(t, 2)
	os.Remove(p.AuditKey())
	if _, _, err := run(t, "verify"); cmdutil.ExitCode(err) != 1 || !strings.Contains(err.Error(), "audit.key is missing, so the log's chain cannot be checked") {
		t.Fatalf("no key: %v", err)
	}
}

// A log that cannot be checked at all exits 1, as a failed check does;
// with --json it says why on stdout, as an object with an "error" field,
// so that a script reading stdout gets an answer.
func TestVerifyJSONSaysWhyItCouldNotCheck(t *testing.T) {
	instancetest.New(t, instance.Config{Name: "other"})
	for _, c := range []struct {
		name, want string
		setup      func()
	}{
		{"no instance", "instance box does not exist", func() {}},
		{"no key", "audit.key is missing", func() { os.Remove(newBox(t, 2).AuditKey()) }},
	} {
		c.setup()
		out, _, err := run(t, "verify", "--json")
		var got struct {
			Error string `json:"error"`
		}
		if cmdutil.ExitCode(err) != 1 || json.Unmarshal([]byte(out), &got) != nil || !strings.Contains(got.Error, c.want) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: %q %v", c.name, out, err)
		}
	}
}

// An unfinished last line is the record being written while the instance
// runs, and left out; once it is stopped no one writes, and it is a
// problem: text added to the log after its last record.
func TestVerifyTellsARunningInstanceFromAStoppedOne(t *testing.T) {
	p := newBox(t, 3)
	f, _ := os.OpenFile(p.NetworkLog(), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"time":"2027-01-01T00:00:00Z","kind":"dns","verdict":"allow","name":"innocent.example"}`)
	f.Close()
	out, _, err := run(t, "verify")
	if cmdutil.ExitCode(err) != 1 || !strings.HasPrefix(out, "network.jsonl line 4: the last line is unfinished") || !strings.Contains(out, "hostd is not running") {
		t.Fatalf("stopped: %q %v", out, err)
	}
	instancetest.Running(t, p, true)
	out, _, err = run(t, "verify")
	if err != nil || out != "ok: 3 records, seq 1..3, across 1 file\nnote: the last line of network.jsonl is unfinished (being written): left out\n" {
		t.Fatalf("running: %q %v", out, err)
	}
}
