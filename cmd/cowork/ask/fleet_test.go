package ask

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/internal/syncbuf"
)

func TestParseFleet(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	o, err := ParseFleet(ios, "dev", []string{"--count", "12", "--parallel", "3", "--model", "opus", "--project", "app", "--max-cost", "2", "--json", "write", "tests"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Tasks) != 12 || o.Tasks[0].ID != "01" || o.Tasks[11].ID != "12" || o.Tasks[4].Prompt != "write tests" {
		t.Errorf("tasks %+v", o.Tasks)
	}
	if o.Parallel != 3 || !o.JSON || o.Project != "app" || o.Budget.MaxCostUSD != 2 || o.Instance != "dev" {
		t.Errorf("options %+v", o)
	}
	if !slices.Equal(o.ClaudeArgs, []string{"--model", "opus"}) {
		t.Errorf("Claude Code's flags %q, want --model opus", o.ClaudeArgs)
	}

	// The prompt from stdin, once for one task.
	ios, in, _, _ := iostreams.Test()
	in.WriteString("  from stdin\n")
	if o, err = ParseFleet(ios, "dev", nil); err != nil || len(o.Tasks) != 1 || o.Tasks[0].Prompt != "from stdin" || o.Tasks[0].ID != "1" {
		t.Errorf("stdin: %+v, %v", o, err)
	}
}

// Every mistake is a usage error (exit 2) that says what to do.
func TestParseFleetRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	file := func(s string) string {
		p := filepath.Join(dir, fmt.Sprintf("t%d", time.Now().UnixNano()))
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var many strings.Builder
	for k := 0; k <= maxTasks; k++ {
		fmt.Fprintf(&many, "task %d\n", k)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--count", "0", "hi"}, "--count \"0\": want a number from 1"},
		{[]string{"--count", "257", "hi"}, "--count \"257\""},
		{[]string{"--count", "x", "hi"}, "--count \"x\""},
		{[]string{"--parallel", "0", "hi"}, "--parallel \"0\""},
		{[]string{"--parallel", "65", "hi"}, "--parallel \"65\""},
		{[]string{"--rm", "hi"}, "unknown flag --rm"},
		{[]string{"--count", "2", "--tasks", file("a\n")}, "--count and --tasks: give one"},
		{[]string{"--tasks", file("a\n"), "hi"}, "a prompt and --tasks: give one"},
		{[]string{"--tasks", filepath.Join(dir, "missing")}, "no such file"},
		{[]string{"--tasks", file("# nothing\n\n")}, "holds no task"},
		{[]string{"--tasks", file("a\n{\"id\":\"x\",\"prompt\":\"p\",\"extra\":1}\n")}, "line 2: json: unknown field \"extra\""},
		{[]string{"--tasks", file(`{"id":"../x","prompt":"p"}`)}, "id \"../x\": use 1-64"},
		{[]string{"--tasks", file("{\"id\":\"a\",\"prompt\":\"p\"}\n{\"id\":\"a\",\"prompt\":\"q\"}\n")}, "line 2: id \"a\" is line 1's too"},
		{[]string{"--tasks", file("{\"id\":\"Docs\",\"prompt\":\"p\"}\n{\"id\":\"docs\",\"prompt\":\"q\"}\n")}, "line 2: id \"docs\" is line 1's too"},
		{[]string{"--tasks", file(`{"id":"a","prompt":"  "}`)}, "task a has no prompt"},
		{[]string{"--tasks", file(`{"id":"a","prompt":"p","project":"a/b"}`)}, "line 1:"},
		{[]string{"--tasks", file(many.String())}, "more than 256 tasks"},
		{[]string{"--tasks", "-"}, "pipe the tasks on stdin"},
		{nil, "needs a prompt"},
	} {
		ios, _, _, _ := iostreams.Test()
		ios.SetStdinTTY(true)
		_, err := ParseFleet(ios, "dev", c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) || cmdutil.ExitCode(err) != 2 {
			t.Errorf("%q: %v (exit %d), want a usage error with %q", c.args, err, cmdutil.ExitCode(err), c.want)
		}
	}
}

func TestParseFleetReadsATasksFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tasks")
	os.WriteFile(p, []byte("# the week's chores\nfix the bug\n\n{\"id\":\"docs\",\"prompt\":\"write the docs\",\"project\":\"site\"}\n  {\"prompt\":\"third\"}\n"), 0o600)
	ios, _, _, _ := iostreams.Test()
	o, err := ParseFleet(ios, "dev", []string{"--tasks", p, "--out", "res"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Task{{ID: "2", Prompt: "fix the bug"}, {ID: "docs", Prompt: "write the docs", Project: "site"}, {ID: "5", Prompt: "third"}}
	if !slices.Equal(o.Tasks, want) || o.OutDir != "res" {
		t.Errorf("tasks %+v, out %q; want %+v", o.Tasks, o.OutDir, want)
	}
}

// fakeFleet runs tasks with run on test streams.
func fakeFleet(tasks int, parallel int, run func(ctx context.Context, t Task, ios *iostreams.IOStreams, ready func(*cowork.Throwaway)) error) (*fleet, *syncbuf.Buffer, *syncbuf.Buffer) {
	o, e := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	f := &fleet{parallel: parallel, ios: iostreams.Writers(nil, o, e), run: run}
	for k := 1; k <= tasks; k++ {
		f.tasks = append(f.tasks, Task{ID: fmt.Sprint(k), Prompt: fmt.Sprint("p", k)})
	}
	return f, o, e
}

// At most --parallel tasks run at once, every task runs, and each one's
// lines come out whole behind its tag, however its writes were cut.
func TestFleetRunsAtMostParallelAndTagsWholeLines(t *testing.T) {
	var now, most atomic.Int32
	f, out, errOut := fakeFleet(7, 3, func(ctx context.Context, t Task, ios *iostreams.IOStreams, ready func(*cowork.Throwaway)) error {
		n := now.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		defer now.Add(-1)
		ready(&cowork.Throwaway{Instance: &cowork.Instance{Name: "dev-rm-" + t.ID}, ID: "run" + t.ID, Ready: cowork.ReadyCold})
		for k := 0; k < 20; k++ {
			fmt.Fprintf(ios.Out, "%s line ", t.Prompt)
			time.Sleep(time.Millisecond)
			fmt.Fprintf(ios.Out, "%d\n", k)
		}
		fmt.Fprintf(ios.ErrOut, "note of %s, no line end", t.ID)
		if t.ID == "5" {
			return &cmdutil.ExitError{Code: 3}
		}
		if t.ID == "6" {
			return errors.New("the clone did not start")
		}
		return nil
	})
	results := f.start(context.Background())
	if most.Load() != 3 {
		t.Errorf("%d tasks ran at once at most, want 3", most.Load())
	}
	lineRE := regexp.MustCompile(`^\[(\d)\] p(\d) line \d+$`)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 7*20 {
		t.Fatalf("%d lines on stdout, want 140:\n%s", len(lines), out)
	}
	for _, l := range lines {
		if m := lineRE.FindStringSubmatch(l); m == nil || m[1] != m[2] {
			t.Fatalf("line %q is not one task's whole line behind its tag", l)
		}
	}
	for k := 1; k <= 7; k++ {
		if !strings.Contains(errOut.String(), fmt.Sprintf("[%d] note of %d, no line end\n", k, k)) {
			t.Errorf("task %d's last stderr line is missing:\n%s", k, errOut)
		}
	}
	for _, r := range results {
		want := 0
		switch r.ID {
		case "5":
			want = 3
		case "6":
			want = -1
		}
		if r.ExitCode != want || r.RunID != "run"+r.ID || r.Clone != "dev-rm-"+r.ID || r.Ready != "cold" || r.Started.IsZero() {
			t.Errorf("result %+v, want exit %d and its run", r, want)
		}
	}
	if !strings.Contains(results[5].Error, "the clone did not start") || !strings.Contains(errOut.String(), "[6] cowork: the clone did not start") {
		t.Errorf("the failure is not said: %+v\n%s", results[5], errOut)
	}

	err := f.report(results, false)
	if cmdutil.ExitCode(err) != 1 || !strings.Contains(err.Error(), "2 of 7 tasks did not succeed (5, 6)") {
		t.Errorf("report: %v (exit %d)", err, cmdutil.ExitCode(err))
	}
	if !regexp.MustCompile(`(?m)^5\s+3\s+\S+\s+run5\s+cold\s+-$`).MatchString(errOut.String()) ||
		!regexp.MustCompile(`(?m)^6\s+error\s`).MatchString(errOut.String()) {
		t.Errorf("the table lacks task 5's or 6's row:\n%s", errOut)
	}
}

// --out keeps each task's streams in files of its own, and never writes
// over one that is there; --json carries each output, bounded.
func TestFleetOutputsInFilesAndJSON(t *testing.T) {
	dir := t.TempDir()
	f, out, errOut := fakeFleet(2, 2, func(ctx context.Context, t Task, ios *iostreams.IOStreams, ready func(*cowork.Throwaway)) error {
		fmt.Fprintf(ios.Out, "answer %s\n", t.ID)
		if t.ID == "2" {
			ios.Out.Write([]byte(strings.Repeat("x", maxCapture)))
		}
		fmt.Fprintf(ios.ErrOut, "footer %s\n", t.ID)
		return nil
	})
	o := &FleetOptions{Tasks: f.tasks, OutDir: dir}
	files, err := o.openOutDir()
	if err != nil {
		t.Fatal(err)
	}
	f.capture, f.files = true, files
	results := f.start(context.Background())
	if b, _ := os.ReadFile(filepath.Join(dir, "1.out")); string(b) != "answer 1\n" {
		t.Errorf("1.out holds %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "1.err")); string(b) != "footer 1\n" {
		t.Errorf("1.err holds %q", b)
	}
	if !strings.Contains(errOut.String(), "[2] footer 2\n") || out.String() != "" {
		t.Errorf("stderr is not tagged, or stdout is not empty: %q / %.100q", errOut, out)
	}
	if results[0].Output != "answer 1\n" || results[0].Truncated || len(results[1].Output) != maxCapture || !results[1].Truncated {
		t.Errorf("captured outputs: %q %v, %d bytes %v", results[0].Output, results[0].Truncated, len(results[1].Output), results[1].Truncated)
	}
	if err := f.report(results, true); err != nil {
		t.Fatal(err)
	}
	var got []Result
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil || len(got) != 2 || got[0].OutputFile != filepath.Join(dir, "1.out") || got[0].ExitCode != 0 {
		t.Errorf("JSON results: %+v, %v", got, err)
	}

	// A second fleet into the same folder is refused before it runs, and
	// the first's files are kept as they were; one whose first task is
	// new there leaves no file of its own behind either.
	if _, err := o.openOutDir(); err == nil || !strings.Contains(err.Error(), "1.out is there already") || cmdutil.ExitCode(err) != 2 {
		t.Errorf("a folder with a task's file: %v", err)
	}
	o.Tasks = []Task{{ID: "0", Prompt: "p"}, {ID: "2", Prompt: "p"}}
	if _, err := o.openOutDir(); err == nil || !strings.Contains(err.Error(), "2.out is there already") {
		t.Errorf("a folder with task 2's file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "1.out")); string(b) != "answer 1\n" {
		t.Errorf("1.out now holds %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "0.out")); err == nil {
		t.Error("the refused fleet left 0.out behind")
	}
}

// A fleet whose output is closed (`| head`) starts no more tasks; the
// running ones end as they would.
func TestFleetWhoseOutputIsClosedStartsNoMore(t *testing.T) {
	var ran atomic.Int32
	f, _, _ := fakeFleet(4, 1, func(ctx context.Context, t Task, ios *iostreams.IOStreams, ready func(*cowork.Throwaway)) error {
		ran.Add(1)
		fmt.Fprintln(ios.Out, "a line")
		return nil
	})
	f.ios.Out = failingWriter{}
	results := f.start(context.Background())
	if ran.Load() != 1 || !results[1].NotRun || !strings.Contains(results[3].Error, "output was closed") || results[0].ExitCode != 0 {
		t.Errorf("%d ran; results %+v", ran.Load(), results)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, syscall.EPIPE }

// A Ctrl-C that lands while every task is still booting its clone is an
// interrupted fleet (130), not a failed one; a task that exits 130 of
// its own is a failed one (1).
func TestFleetInterruptedWhileBootingExits130(t *testing.T) {
	f, _, _ := fakeFleet(2, 2, func(ctx context.Context, t Task, ios *iostreams.IOStreams, ready func(*cowork.Throwaway)) error {
		if t.ID == "1" {
			syscall.Kill(os.Getpid(), syscall.SIGINT)
		}
		time.Sleep(100 * time.Millisecond)
		return context.Canceled // the boot, abandoned
	})
	if err := f.report(f.start(context.Background()), false); cmdutil.ExitCode(err) != 130 {
		t.Errorf("report: %v, want exit 130", err)
	}
	f, _, _ = fakeFleet(1, 1, func(ctx context.Context, t Task, ios *iostreams.IOStreams, ready func(*cowork.Throwaway)) error {
		return &cmdutil.ExitError{Code: 130}
	})
	if err := f.report(f.start(context.Background()), false); cmdutil.ExitCode(err) != 1 {
		t.Errorf("a guest's own 130: %v, want exit 1", err)
	}
}

// Written a byte at a time, lines come out whole and once each.
func TestTaggedTakesAByteAtATime(t *testing.T) {
	var b strings.Builder
	tg := &tagged{mu: &sync.Mutex{}, w: &b, tag: "[a] "}
	text := "one\ntwo two\n\nthree"
	for i := range len(text) {
		tg.Write([]byte{text[i]})
	}
	tg.flush()
	if b.String() != "[a] one\n[a] two two\n[a] \n[a] three\n" {
		t.Errorf("got %q", b.String())
	}
}

// After Ctrl-C the tasks not started are not run, the running one ends,
// and the fleet exits 130.
func TestFleetInterruptedRunsNoMoreTasks(t *testing.T) {
	var ran atomic.Int32
	f, _, _ := fakeFleet(4, 1, func(ctx context.Context, t Task, ios *iostreams.IOStreams, ready func(*cowork.Throwaway)) error {
		ran.Add(1)
		if t.ID == "2" {
			syscall.Kill(os.Getpid(), syscall.SIGINT)
			time.Sleep(100 * time.Millisecond) // the signal is in before it ends
		}
		return nil
	})
	results := f.start(context.Background())
	if ran.Load() != 2 || !results[2].NotRun || !results[3].NotRun || results[1].NotRun || results[1].ExitCode != 0 {
		t.Errorf("%d ran; results %+v", ran.Load(), results)
	}
	if err := f.report(results, false); cmdutil.ExitCode(err) != 130 {
		t.Errorf("report: %v, want exit 130", err)
	}
}

func TestTaggedCutsAnEndlessLine(t *testing.T) {
	var b strings.Builder
	tg := &tagged{mu: &sync.Mutex{}, w: &b, tag: "[a] "}
	tg.Write([]byte(strings.Repeat("y", maxLine+10)))
	if got := strings.Count(b.String(), "[a] "); got != 1 || len(tg.buf) != 10 {
		t.Errorf("%d tagged pieces out, %d bytes held; want 1 and 10", got, len(tg.buf))
	}
	tg.flush()
	if !strings.HasSuffix(b.String(), "\n[a] yyyyyyyyyy\n") {
		t.Errorf("the rest is not flushed as a line: %q", b.String()[b.Len()-30:])
	}
}
