package dashboard

import (
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// Spend is what API calls through the relay cost.
type Spend struct {
	Calls        int64   `json:"calls"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	CacheTokens  int64   `json:"cache_tokens"` // written to and read from the prompt cache
	CostUSD      float64 `json:"cost_usd"`
}

func (s *Spend) add(o Spend) {
	s.Calls += o.Calls
	s.InputTokens += o.InputTokens
	s.OutputTokens += o.OutputTokens
	s.CacheTokens += o.CacheTokens
	s.CostUSD += o.CostUSD
}

// spendOf is what one relay record spent: a call, and the tokens and
// cost the relay counted from its answer. This is the one place that
// reads them; the page shows a column and charts a series for each field
// of Spend that is not zero.
func spendOf(r *audit.Record) Spend {
	s := Spend{Calls: 1}
	if u := r.Usage; u != nil {
		s.InputTokens, s.OutputTokens, s.CostUSD = u.InputTokens, u.OutputTokens, u.CostUSD
		s.CacheTokens = u.CacheCreationInputTokens + u.CacheReadInputTokens
	}
	return s
}

// Task is one piece of work whose API calls are added up: a throwaway
// run (exec --rm, ask --rm), or a relay session on an instance (one
// `cowork ask` or `cowork claude`).
type Task struct {
	Key      string `json:"key"`
	Instance string `json:"instance"` // the parent, for a run
	Run      string `json:"run,omitempty"`
	Session  string `json:"session,omitempty"`
	// What ran, from a run's closing record: exec or ask, and the command.
	What    string    `json:"what,omitempty"`
	Command string    `json:"command,omitempty"`
	Exit    *int      `json:"exit_code,omitempty"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
	Total   Spend     `json:"total"`
	// Series is the spend a minute, oldest first, at most maxPoints
	// minutes that had calls.
	Series []Point `json:"series"`
}

// Point is the spend of the minute that starts at Time.
type Point struct {
	Time time.Time `json:"t"`
	Spend
}

const (
	maxTasks  = 200 // the least recently active go first
	maxPoints = 240
)

// spendBook adds up the spend of each task, for the page's spend panel.
// It is fed every record, history included, so a task's totals cover all
// of the log read, not just the backlog.
type spendBook struct {
	tasks map[string]*Task
}

func newSpendBook() *spendBook { return &spendBook{tasks: map[string]*Task{}} }

// add counts ev's record r; it returns the task it changed (nil when none)
// and the key of a task it forgot to stay within maxTasks.
func (b *spendBook) add(ev *Event, r *audit.Record) (changed *Task, evicted string) {
	isRun := r.Kind == audit.KindRun && r.Run != nil
	if r.Kind != audit.KindRelay && !isRun {
		return nil, ""
	}
	t, evicted := b.task(ev, r)
	if t == nil {
		return nil, ""
	}
	if isRun {
		t.What, t.Command = inert(r.Run.What), inert(r.Run.Command)
		code := r.Run.ExitCode
		t.Exit = &code
		b.touch(t, r.Time)
		return t, evicted
	}
	s := spendOf(r)
	t.Total.add(s)
	b.touch(t, r.Time)
	minute := r.Time.Truncate(time.Minute)
	i := len(t.Series)
	for i > 0 && t.Series[i-1].Time.After(minute) {
		i-- // history of several files can come out of order
	}
	if i > 0 && t.Series[i-1].Time.Equal(minute) {
		t.Series[i-1].add(s)
	} else {
		t.Series = append(t.Series, Point{})
		copy(t.Series[i+1:], t.Series[i:])
		t.Series[i] = Point{Time: minute, Spend: s}
		if len(t.Series) > maxPoints {
			t.Series = t.Series[1:]
		}
	}
	return t, evicted
}

// task finds or makes the task r belongs to: its run, else its session.
func (b *spendBook) task(ev *Event, r *audit.Record) (*Task, string) {
	t := &Task{Instance: ev.Instance, Run: ev.Run}
	if t.Run == "" {
		t.Run = inert(clipString(r.RunID, 64))
	}
	if ev.Parent != "" {
		t.Instance = ev.Parent
	}
	switch {
	case t.Run != "":
		t.Key = t.Instance + "/run/" + t.Run
	case r.Session != "":
		t.Session = inert(clipString(r.Session, 64))
		t.Key = t.Instance + "/session/" + t.Session
	default:
		return nil, "" // refused before it had a session
	}
	if have := b.tasks[t.Key]; have != nil {
		return have, ""
	}
	evicted := ""
	if len(b.tasks) >= maxTasks {
		for k, o := range b.tasks {
			if evicted == "" || o.Last.Before(b.tasks[evicted].Last) {
				evicted = k
			}
		}
		delete(b.tasks, evicted)
	}
	b.tasks[t.Key] = t
	return t, evicted
}

func (b *spendBook) touch(t *Task, at time.Time) {
	if t.First.IsZero() || at.Before(t.First) {
		t.First = at
	}
	if at.After(t.Last) {
		t.Last = at
	}
}
