package dashboard

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// Each relay call counts toward its task, a minute at a time: a session
// on the instance, or a throwaway run (from the clone's own log or its
// parent's runs.jsonl, the same task), labelled by the run's record.
func TestSpendIsAddedUpByTask(t *testing.T) {
	b := newSpendBook()
	t0 := time.Date(2026, 3, 1, 10, 0, 5, 0, time.UTC)
	relay := func(at time.Duration, session, run string) *audit.Record {
		return &audit.Record{Time: t0.Add(at), Kind: audit.KindRelay, Verdict: audit.Allow, Session: session, RunID: run}
	}
	add := func(ev *Event, r *audit.Record) *Task {
		tk, _ := b.add(ev, r)
		return tk
	}
	own := &Event{Instance: "box", Log: LogNetwork}
	for _, at := range []time.Duration{0, 10 * time.Second, 70 * time.Second, 30 * time.Second} { // the last one out of order
		add(own, relay(at, "s1", ""))
	}
	if tk := add(own, &audit.Record{Time: t0, Kind: audit.KindTCP, Verdict: audit.Allow}); tk != nil {
		t.Errorf("a flow counted as spend: %+v", tk)
	}
	if tk := add(own, relay(0, "", "")); tk != nil {
		t.Errorf("a call without a session made a task: %+v", tk)
	}
	s1 := b.tasks["box/session/s1"]
	if s1 == nil || s1.Total.Calls != 4 || len(s1.Series) != 2 || s1.Series[0].Calls != 3 || s1.Series[1].Calls != 1 ||
		!s1.Series[0].Time.Equal(t0.Truncate(time.Minute)) || !s1.First.Equal(t0) || !s1.Last.Equal(t0.Add(70*time.Second)) {
		t.Fatalf("session s1: %+v", s1)
	}

	// A call the relay priced adds its tokens and cost.
	priced := relay(0, "s3", "")
	priced.Usage = &audit.Usage{InputTokens: 1000, OutputTokens: 200, CacheCreationInputTokens: 30, CacheReadInputTokens: 7, CostUSD: 0.25}
	add(own, priced)
	add(own, relay(time.Second, "s3", ""))
	if s3 := b.tasks["box/session/s3"]; s3 == nil || s3.Total != (Spend{Calls: 2, InputTokens: 1000, OutputTokens: 200, CacheTokens: 37, CostUSD: 0.25}) {
		t.Fatalf("session s3: %+v", s3)
	}
	delete(b.tasks, "box/session/s3")

	clone := &Event{Instance: "box-rm-0a1b2c3d", Parent: "box", Run: "0a1b2c3d", Log: LogNetwork}
	add(clone, relay(0, "s2", ""))
	runs := &Event{Instance: "box", Run: "0a1b2c3d", Log: LogRuns}
	add(runs, relay(time.Second, "s2", "0a1b2c3d"))
	tk := add(runs, &audit.Record{Time: t0.Add(2 * time.Second), Kind: audit.KindRun, RunID: "0a1b2c3d",
		Run: &audit.RunInfo{What: "ask", Command: "fix the \x1b[2Jtests", ExitCode: 3}})
	if tk == nil || tk.Key != "box/run/0a1b2c3d" || tk.Total.Calls != 2 || tk.What != "ask" || tk.Command != "fix the ␛[2Jtests" || *tk.Exit != 3 || len(b.tasks) != 2 {
		t.Fatalf("run: %+v (%d tasks)", tk, len(b.tasks))
	}
}

// The book keeps maxTasks tasks, the least recently active forgotten;
// a task keeps maxPoints minutes.
func TestSpendIsBounded(t *testing.T) {
	b := newSpendBook()
	t0 := time.Now()
	ev := &Event{Instance: "box", Log: LogNetwork}
	var evicted []string
	for i := range maxTasks + 3 {
		_, e := b.add(ev, &audit.Record{Time: t0.Add(time.Duration(i) * time.Second), Kind: audit.KindRelay, Session: fmt.Sprintf("s%03d", i)})
		if e != "" {
			evicted = append(evicted, e)
		}
	}
	if len(b.tasks) != maxTasks || strings.Join(evicted, " ") != "box/session/s000 box/session/s001 box/session/s002" {
		t.Fatalf("%d tasks, evicted %v", len(b.tasks), evicted)
	}
	for i := range maxPoints + 10 {
		b.add(ev, &audit.Record{Time: t0.Add(time.Duration(i) * time.Minute), Kind: audit.KindRelay, Session: "long"})
	}
	if n := len(b.tasks["box/session/long"].Series); n != maxPoints {
		t.Fatalf("%d points", n)
	}
}

// A throwaway run's records are read from its clone's log while it runs;
// when the run ends they are copied into the parent's runs.jsonl, and
// shown once. Records the clone's log was not seen with are shown.
func TestARunsCopiesAreShownOnce(t *testing.T) {
	w := &watcher{feed: newFeed(100, 1<<20, 4), book: newSpendBook(), copies: newCopyBook()}
	t0 := time.Now()
	flow := func(i int) *audit.Record {
		return &audit.Record{Time: t0.Add(time.Duration(i) * time.Millisecond), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "pypi.org", Dst: "151.101.0.223:443", BytesIn: int64(i)}
	}
	clone := source{instance: "box-rm-0a1b2c3d", parent: "box", run: runID("box", "box-rm-0a1b2c3d"), log: LogNetwork}
	runs := source{instance: "box", log: LogRuns}
	for i := range 3 {
		w.record(clone, flow(i))
	}
	for i := range 4 { // the copies, and one the clone's log was not seen with
		r := flow(i)
		r.RunID, r.Seq = "0a1b2c3d", 0
		w.record(runs, r)
	}
	w.record(runs, &audit.Record{Time: t0.Add(time.Second), Kind: audit.KindRun, RunID: "0a1b2c3d", Run: &audit.RunInfo{What: "exec", Command: "pip install x"}})
	var got []string
	for _, it := range w.feed.backlog {
		got = append(got, string(frameData(it.frame)))
	}
	if len(got) != 5 || !strings.Contains(got[3], `"instance":"box","run":"0a1b2c3d","log":"runs"`) || !strings.Contains(got[3], `"bytes_in":3`) {
		t.Fatalf("want the clone's 3, the one not seen and the run:\n%s", strings.Join(got, "\n"))
	}
	if !strings.Contains(got[0], `"instance":"box-rm-0a1b2c3d","parent":"box","run":"0a1b2c3d","log":"network"`) {
		t.Errorf("the clone's record: %s", got[0])
	}
	if len(w.copies.runs) != 0 || w.copies.total != 0 {
		t.Errorf("the run's end left %d runs remembered", len(w.copies.runs))
	}
}

// Calls of a task are sent as one task event an interval, not one a
// record: each carries the task's whole history.
func TestATasksCallsAreSentOnceAnInterval(t *testing.T) {
	w := &watcher{feed: newFeed(1000, 64<<20, 4), book: newSpendBook(), copies: newCopyBook()}
	sub, _ := w.feed.subscribe()
	src := source{instance: "box", log: LogNetwork}
	t0 := time.Now()
	for i := range 500 {
		w.record(src, &audit.Record{Time: t0.Add(time.Duration(i) * time.Minute), Kind: audit.KindRelay, Verdict: audit.Allow, Session: "s1"})
	}
	w.record(src, &audit.Record{Time: t0, Kind: audit.KindRelay, Verdict: audit.Allow, Session: "s2"})
	w.sendTasks()
	w.sendTasks() // nothing changed since
	tasks := map[string]int{}
	records := 0
	for _, fr := range sub.take() {
		switch {
		case strings.HasPrefix(string(fr), "event: task\n"):
			var tk Task
			if err := json.Unmarshal(frameData(fr), &tk); err != nil {
				t.Fatal(err)
			}
			tasks[tk.Key]++
			if tk.Key == "box/session/s1" && tk.Total.Calls != 500 {
				t.Errorf("s1 sent with %d calls, want all 500", tk.Total.Calls)
			}
		case strings.HasPrefix(string(fr), "event: record\n"):
			records++
		}
	}
	if records != 501 || len(tasks) != 2 || tasks["box/session/s1"] != 1 || tasks["box/session/s2"] != 1 {
		t.Fatalf("%d records, tasks sent %v; want 501, and each task once", records, tasks)
	}
}
