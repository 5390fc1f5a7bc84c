package dashboard

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/fnv"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// watcher finds the instances in $COWORK_HOME and follows their logs:
// each instance's network.jsonl, and the runs.jsonl of those that are
// not throwaway clones. It reads files only, as `cowork proxy -f` does:
// nothing it does reaches hostd's writes.
type watcher struct {
	feed  *feed
	since time.Time
	every time.Duration // how often instances are looked for
	logf  func(format string, args ...any)

	mu      sync.Mutex // serialises records: the dedupe, the book, their order
	book    *spendBook
	changed map[string]bool // the tasks to send at the next sendTasks
	copies  *copyBook
	logs    map[string]context.CancelFunc // by log path
	last    []byte                        // the instances frame last sent
}

// run looks for instances until ctx ends, and their logs' records
// stream into the feed.
func (w *watcher) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(taskEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				w.sendTasks()
			}
		}
	}()
	for {
		w.scan(ctx, &wg)
		select {
		case <-ctx.Done():
			return
		case <-time.After(w.every):
		}
	}
}

// scan follows the logs of instances it has not seen yet, stops those
// of instances gone, and sends the instance list when it changed.
func (w *watcher) scan(ctx context.Context, wg *sync.WaitGroup) {
	names, err := instance.List()
	if err != nil {
		w.logf("list the instances: %v", err)
	}
	want := map[string]bool{}
	var list []Instance
	for _, name := range names {
		in := describe(ctx, name)
		list = append(list, in)
		paths, err := instance.PathsFor(name)
		if err != nil {
			continue
		}
		src := source{instance: name, log: LogNetwork}
		if in.Parent != "" {
			src.parent, src.run = in.Parent, runID(in.Parent, name)
		}
		w.follow(ctx, wg, paths.NetworkLog(), src, want)
		if in.Parent == "" {
			w.follow(ctx, wg, paths.Runs(), source{instance: name, log: LogRuns}, want)
		}
	}
	w.mu.Lock()
	for path, stop := range w.logs {
		if !want[path] {
			stop()
			delete(w.logs, path)
		}
	}
	w.mu.Unlock()
	if list == nil {
		list = []Instance{}
	}
	fr, err := frame("instances", list)
	if err == nil && !bytes.Equal(fr, w.last) {
		w.last = fr
		w.feed.publishInstances(fr)
	}
}

// source is where a log's records come from.
type source struct {
	instance, parent, run, log string
}

func (w *watcher) follow(ctx context.Context, wg *sync.WaitGroup, path string, src source, want map[string]bool) {
	want[path] = true
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.logs[path] != nil {
		return
	}
	ctx, stop := context.WithCancel(ctx)
	w.logs[path] = stop
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := audit.Stream(ctx, path, w.since, true, func(r *audit.Record) error { return w.record(src, r) })
		if err != nil && ctx.Err() == nil {
			w.logf("stopped following %s: %v", path, err)
		}
	}()
}

// record sends r, from src, to the feed, and its spend to the book.
func (w *watcher) record(src source, r *audit.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	run := src.run
	if src.log == LogRuns {
		run = r.RunID
	}
	if w.isCopy(src, r) {
		return nil
	}
	ev, err := newEvent(src.instance, src.parent, clipString(run, 64), src.log, r)
	if err != nil {
		return nil // a record that does not encode is not the page's to fix
	}
	if t, evicted := w.book.add(ev, r); t != nil {
		if evicted != "" {
			delete(w.changed, evicted)
			w.feed.publishTask(evicted, nil)
		}
		if w.changed == nil {
			w.changed = map[string]bool{}
		}
		w.changed[t.Key] = true
	}
	return w.feed.publishRecord(ev)
}

// taskEvery is how often the tasks that changed are sent. A task's
// event carries its whole history (up to maxPoints minutes), so it is
// sent once an interval however many calls it made: one a record would
// send megabytes while a large log is read, and drop the pages.
const taskEvery = 250 * time.Millisecond

// sendTasks sends each task that changed since it last ran, once.
func (w *watcher) sendTasks() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for key := range w.changed {
		if t := w.book.tasks[key]; t != nil {
			if fr, err := frame("task", t); err == nil {
				w.feed.publishTask(key, fr)
			}
		}
	}
	clear(w.changed)
}

// isCopy says whether r, from a parent's runs.jsonl, is the copy of a
// record already read from its throwaway clone's own log while the clone
// lived (see copyBook). A run's closing record ends its memory.
func (w *watcher) isCopy(src source, r *audit.Record) bool {
	switch {
	case src.log == LogNetwork && src.run != "":
		w.copies.note(src.parent+"/"+src.run, recordKey(r))
	case src.log == LogRuns && r.RunID != "":
		key := src.instance + "/" + r.RunID
		if r.Kind == audit.KindRun {
			w.copies.end(key)
			return false
		}
		return w.copies.take(key, recordKey(r))
	}
	return false
}

// recordKey identifies a record across its copy: the copy differs only
// in its run id and seq.
func recordKey(r *audit.Record) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for _, n := range []int64{r.Time.UnixNano(), r.Start.UnixNano(), r.BytesOut, r.BytesIn, int64(math.Float64bits(r.DurationMs))} {
		binary.LittleEndian.PutUint64(b[:], uint64(n))
		h.Write(b[:])
	}
	for _, s := range []string{r.Kind, r.Verdict, r.Name, r.Dst, r.QType, r.URL, r.Rule} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// runID is the run a throwaway clone named name was made for: its name
// is the parent's (cut to 50 bytes), "-rm-" and the run's id.
func runID(parent, name string) string {
	if len(parent) > 50 {
		parent = parent[:50]
	}
	id, _ := strings.CutPrefix(name, parent+"-rm-")
	return id
}
