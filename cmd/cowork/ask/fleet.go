package ask

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/throwaway"
	"github.com/coworkhq/cowork/hostd/claudecode"
)

// `cowork fleet ask` runs many asks at once, each in a throwaway clone of
// the instance (cowork.Throwaway, as ask --rm: on this machine a clone of
// a snapshot, on a cluster a clone of the instance's disk), at most
// --parallel at a time. Each task's lines are tagged with its id, or kept
// in a folder of its own, and the fleet ends with one line per task.

// Task is one ask of a fleet.
type Task struct {
	ID      string `json:"id"`
	Prompt  string `json:"prompt"`
	Project string `json:"project,omitempty"`
}

// FleetOptions is a parsed `cowork fleet ask` command line.
type FleetOptions struct {
	// Options is the ask each task runs: Claude Code's flags, --project
	// (a task's own wins), the budget (each task's own).
	Options
	Tasks    []Task
	Parallel int // 0: defaultParallel for where the instance runs
	OutDir   string
	JSON     bool
}

// Bounds on a fleet: what one command line may start, and what it reads.
const (
	maxTasks     = 256
	maxParallel  = 64
	maxTasksFile = 4 << 20
)

// Parallel runs by default: on this machine each clone is a VM of the
// instance's size, so two; a cluster schedules them on its nodes.
const (
	defaultParallel        = 2
	defaultClusterParallel = 8
)

// fleetFlags are fleet ask's own flags: ask's, less --rm (every task runs
// in a throwaway clone), and the fleet's.
var fleetFlags = append(slices.DeleteFunc(slices.Clone(ownFlags), func(f claudecode.Flag) bool { return f.Long == "--rm" }),
	claudecode.Flag{Long: "--count", Arity: claudecode.RequiredValue, Value: "<n>", Help: fmt.Sprintf("ask the prompt N times, each in a clone of its own (1-%d; default 1)", maxTasks)},
	claudecode.Flag{Long: "--tasks", Arity: claudecode.RequiredValue, Value: "<file>", Help: `one task per line: a prompt, or {"id":"ID","prompt":"...","project":"NAME"}; # comments; - reads stdin`},
	claudecode.Flag{Long: "--parallel", Arity: claudecode.RequiredValue, Value: "<n>", Help: fmt.Sprintf("run at most N tasks at once (1-%d; default %d on this machine, %d on a cluster)", maxParallel, defaultParallel, defaultClusterParallel)},
	claudecode.Flag{Long: "--out", Arity: claudecode.RequiredValue, Value: "<dir>", Help: "keep each task's output in DIR/ID.out and its messages in DIR/ID.err (made before any task runs; none may be there)"},
	claudecode.Flag{Long: "--json", Help: "print the results on stdout as JSON, each task's output in it"},
)

// ParseFleet reads a `cowork fleet ask` command line.
func ParseFleet(ios *iostreams.IOStreams, instance string, args []string) (*FleetOptions, error) {
	o := &FleetOptions{Options: Options{IO: ios, Instance: instance}}
	p, err := o.parseFlags(args, fleetFlags)
	if err != nil {
		return nil, err
	}
	o.ClaudeArgs = p.Claude
	o.Raw = p.Given["--output-format"]
	last := func(name string) (string, bool) {
		v := p.Own[name]
		if len(v) == 0 {
			return "", false
		}
		return v[len(v)-1], true
	}
	count, hasCount := last("--count")
	file, hasTasks := last("--tasks")
	if v, ok := last("--parallel"); ok {
		if o.Parallel, err = strconv.Atoi(v); err != nil || o.Parallel < 1 || o.Parallel > maxParallel {
			return nil, cmdutil.FlagErrorf("--parallel %q: want a number from 1 to %d", v, maxParallel)
		}
	}
	o.OutDir, _ = last("--out")
	_, o.JSON = p.Own["--json"]
	prompt := strings.Join(p.Positional, " ")

	switch {
	case hasTasks && hasCount:
		return nil, cmdutil.FlagErrorf("--count and --tasks: give one (--count N asks one prompt N times; --tasks FILE asks each of its lines once)")
	case hasTasks && prompt != "":
		return nil, cmdutil.FlagErrorf("a prompt and --tasks: give one; a prompt for every task goes in the file, one per line")
	case hasTasks:
		o.Tasks, err = readTasks(ios, file)
		return o, err
	}
	n := 1
	if hasCount {
		if n, err = strconv.Atoi(count); err != nil || n < 1 || n > maxTasks {
			return nil, cmdutil.FlagErrorf("--count %q: want a number from 1 to %d", count, maxTasks)
		}
	}
	if prompt == "" || prompt == "-" {
		if ios.IsStdinTTY() || ios.In == nil {
			return nil, cmdutil.FlagErrorf("cowork fleet ask needs a prompt: cowork fleet ask --count 3 \"write hello world\" (or pipe it on stdin), or --tasks FILE")
		}
		if prompt, err = readAll(ios.In, "stdin"); err != nil {
			return nil, err
		}
	}
	width := len(strconv.Itoa(n))
	for k := 1; k <= n; k++ {
		o.Tasks = append(o.Tasks, Task{ID: fmt.Sprintf("%0*d", width, k), Prompt: prompt})
	}
	return o, nil
}

// taskIDRE is a task's id: its output's file name and its lines' tag.
var taskIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// readTasks reads --tasks FILE (- for stdin): one task per line, a prompt
// or a JSON object; blank lines and lines starting with # are skipped.
// Tasks without an id are numbered by their line.
func readTasks(ios *iostreams.IOStreams, file string) ([]Task, error) {
	var data string
	var err error
	if file == "-" {
		if ios.IsStdinTTY() || ios.In == nil {
			return nil, cmdutil.FlagErrorf("--tasks -: pipe the tasks on stdin, one per line")
		}
		data, err = readAll(ios.In, "stdin")
	} else {
		f, ferr := os.Open(file)
		if ferr != nil {
			return nil, cmdutil.FlagErrorf("--tasks: %v", ferr)
		}
		defer f.Close()
		data, err = readAll(f, file)
	}
	if err != nil {
		return nil, err
	}
	var tasks []Task
	seen := map[string]int{} // by the id in lower case: ids name files, and a Mac's are case-blind
	sc := bufio.NewScanner(strings.NewReader(data))
	sc.Buffer(nil, maxTasksFile)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		t := Task{Prompt: text}
		if strings.HasPrefix(text, "{") {
			t = Task{}
			dec := json.NewDecoder(strings.NewReader(text))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&t); err != nil {
				return nil, cmdutil.FlagErrorf("--tasks %s, line %d: %v; a task is a prompt or {\"id\":\"ID\",\"prompt\":\"...\",\"project\":\"NAME\"}", file, line, err)
			}
		}
		if t.ID == "" {
			t.ID = strconv.Itoa(line)
		}
		switch {
		case !taskIDRE.MatchString(t.ID):
			return nil, cmdutil.FlagErrorf("--tasks %s, line %d: id %q: use 1-64 of [A-Za-z0-9._-], starting with a letter or digit (it names the task's output file)", file, line, t.ID)
		case seen[strings.ToLower(t.ID)] > 0:
			return nil, cmdutil.FlagErrorf("--tasks %s, line %d: id %q is line %d's too (ids must differ, in more than case)", file, line, t.ID, seen[strings.ToLower(t.ID)])
		case strings.TrimSpace(t.Prompt) == "":
			return nil, cmdutil.FlagErrorf("--tasks %s, line %d: task %s has no prompt", file, line, t.ID)
		}
		if t.Project != "" {
			if err := cowork.ValidateProject(t.Project); err != nil {
				return nil, cmdutil.FlagErrorf("--tasks %s, line %d: %v", file, line, err)
			}
		}
		seen[strings.ToLower(t.ID)] = line
		if tasks = append(tasks, t); len(tasks) > maxTasks {
			return nil, cmdutil.FlagErrorf("--tasks %s: more than %d tasks; split the file", file, maxTasks)
		}
	}
	if len(tasks) == 0 {
		return nil, cmdutil.FlagErrorf("--tasks %s holds no task: write one prompt per line", file)
	}
	return tasks, nil
}

// readAll reads r whole, at most maxTasksFile bytes, trimmed; empty is an
// error naming what was read.
func readAll(r io.Reader, what string) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxTasksFile+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	if len(b) > maxTasksFile {
		return "", cmdutil.FlagErrorf("%s is over %d MiB", what, maxTasksFile>>20)
	}
	s := strings.TrimSpace(string(bytes.ToValidUTF8(b, []byte("\uFFFD"))))
	if s == "" {
		return "", cmdutil.FlagErrorf("cowork fleet ask read nothing from %s", what)
	}
	return s, nil
}

// RunFleet runs the fleet: each task in a throwaway clone of the
// instance, at most o.Parallel at once.
func RunFleet(ctx context.Context, o *FleetOptions) error {
	parent, err := open(&o.Options)
	if err != nil {
		return err
	}
	cred, err := cowork.CredentialFor(parent.Config, os.Getenv)
	if err != nil {
		return err
	}
	if o.Parallel == 0 {
		o.Parallel = defaultParallel
		if parent.Config.Remote() {
			o.Parallel = defaultClusterParallel
		}
	}
	note := func(s string) { fmt.Fprintln(o.IO.ErrOut, "cowork:", s) }
	// One snapshot for all: runs started at once would each take one.
	snap, err := parent.ThrowawaySnapshot("", note)
	if err != nil {
		return err
	}
	files, err := o.openOutDir()
	if err != nil {
		return err
	}
	f := &fleet{tasks: o.Tasks, parallel: o.Parallel, ios: o.IO, capture: o.JSON, files: files}
	f.run = func(ctx context.Context, t Task, ios *iostreams.IOStreams, ready func(*cowork.Throwaway)) error {
		ask := o.Options
		ask.IO, ask.Prompt = ios, t.Prompt
		if t.Project != "" {
			ask.Project = t.Project
		}
		to := throwaway.Options{Parent: parent.Name, Snapshot: snap, What: "ask", Command: t.Prompt, Ready: ready}
		return throwaway.Run(ctx, ios, to, func(ctx context.Context, clone *cowork.Instance) error {
			return ask.askIn(ctx, clone, cred)
		})
	}
	note(fmt.Sprintf("fleet of %d from %s, %d at a time", len(o.Tasks), parent.Name, o.Parallel))
	results := f.start(ctx)
	return f.report(results, o.JSON)
}

// openOutDir makes --out's folder and every task's two files in it,
// before any task runs; a file that is there already (an earlier
// fleet's, or another running into the same folder) is refused, and the
// files made until then are removed: nothing is written over.
func (o *FleetOptions) openOutDir() (map[string]outFiles, error) {
	if o.OutDir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	files := map[string]outFiles{}
	var made []*os.File
	undo := func() {
		for _, f := range made {
			f.Close()
			os.Remove(f.Name())
		}
	}
	for _, t := range o.Tasks {
		var pair [2]*os.File
		for k, ext := range []string{".out", ".err"} {
			p := filepath.Join(o.OutDir, t.ID+ext)
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if errors.Is(err, os.ErrExist) {
				undo()
				return nil, cmdutil.FlagErrorf("--out %s: %s is there already; choose another folder, or remove it", o.OutDir, p)
			} else if err != nil {
				undo()
				return nil, fmt.Errorf("--out: %w", err)
			}
			made, pair[k] = append(made, f), f
		}
		files[t.ID] = outFiles{out: pair[0], err: pair[1]}
	}
	return files, nil
}
