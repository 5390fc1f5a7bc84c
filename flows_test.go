package cowork

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/units"
)

// Flows reads an instance's audit log through the Go API with the
// filters of `cowork proxy`: an exec's flows as the guest names their
// owners, and an ask's API calls, tool calls and its exec's flows.
func TestFlowsPicksAnExecsAndAnAsksRecords(t *testing.T) {
	inst := openNew(t, instance.Config{Name: "box", CPUs: 1, Memory: units.GiB, Disk: units.MiB, Arch: "arm64", Boot: instance.BootEFI})
	const exec, ask = "1111111111111111", "2222222222222222"
	t0 := time.Now().Add(-time.Hour)
	owner := func(id string) *audit.Owner { return &audit.Owner{Exec: id, PID: 7, ClaimedBy: audit.ClaimedByGuest} }
	records := []*audit.Record{
		{Time: t0, Kind: audit.KindTCP, Verdict: audit.Allow, Dst: "1.1.1.1:443", Owner: owner(exec)},
		{Time: t0.Add(time.Minute), Kind: audit.KindRelay, Verdict: audit.Allow, Session: ask},
		{Time: t0.Add(2 * time.Minute), Kind: audit.KindTool, Verdict: audit.Allow, Session: ask, Tool: &audit.ToolCall{ID: "toolu_1", Name: "Bash", ClaimedBy: audit.ClaimedByGuest}},
		{Time: t0.Add(3 * time.Minute), Kind: audit.KindTCP, Verdict: audit.Deny, Dst: "169.254.169.254:80", Owner: owner(ask)},
		{Time: t0.Add(4 * time.Minute), Kind: audit.KindDNS, Verdict: audit.Allow, Name: "example.com"},
	}
	f, err := os.Create(inst.Paths.NetworkLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range records {
		b, _ := json.Marshal(r)
		f.Write(append(b, '\n'))
	}
	f.WriteString("not a record\n")
	f.Close()
	read := func(ff FlowFilter) (kinds []string, skipped int) {
		skipped, err := inst.Flows(context.Background(), ff, func(r *audit.Record) error {
			kinds = append(kinds, r.Kind+" "+r.Dst)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return kinds, skipped
	}
	if got, skipped := read(FlowFilter{}); len(got) != 5 || skipped != 1 {
		t.Fatalf("all: %q, %d skipped", got, skipped)
	}
	if got, _ := read(FlowFilter{Exec: "1111"}); len(got) != 1 || got[0] != "tcp 1.1.1.1:443" {
		t.Fatalf("the exec's: %q", got)
	}
	if got, _ := read(FlowFilter{Ask: ask}); len(got) != 3 || got[0] != "relay " || got[1] != "tool " || got[2] != "tcp 169.254.169.254:80" {
		t.Fatalf("the ask's: %q", got)
	}
	if got, _ := read(FlowFilter{Since: t0.Add(150 * time.Second)}); len(got) != 2 {
		t.Fatalf("since: %q", got)
	}
}
