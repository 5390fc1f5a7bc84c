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
