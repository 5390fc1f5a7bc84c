package dashboard

import (
	"sort"
	"sync"
	"time"
)

// feed fans the records the watchers read out to the page's event
// streams. It never waits on a client: each has a queue bounded in
// bytes, and a client whose queue would overflow is dropped (its page
// reconnects and starts again from the backlog). So a slow or stuck
// browser costs a bounded amount of memory, and the watchers, which only
// read the log files hostd writes, never slow down.
type feed struct {
	mu      sync.Mutex
	backlog []item // the newest records by time, oldest first
	keep    int    // how many records backlog holds
	subs    map[*sub]struct{}
	maxSubs int
	queue   int // bytes a client may have waiting
	nextID  int64

	// The latest instances and tasks events, for a client that connects.
	instances []byte
	tasks     map[string][]byte
}

type item struct {
	time  time.Time
	frame []byte
}

func newFeed(keep, queue, maxSubs int) *feed {
	return &feed{keep: keep, queue: queue, maxSubs: maxSubs, subs: map[*sub]struct{}{}, tasks: map[string][]byte{}}
}

// sub is one client's event stream.
type sub struct {
	mu      sync.Mutex
	pending [][]byte
	bytes   int
	ready   chan struct{} // signalled when pending grows
	dropped chan struct{} // closed when the client fell too far behind
	gone    bool
}

// publishRecord numbers ev, keeps it in the backlog if it is among the
// newest, and sends it to every client.
func (f *feed) publishRecord(ev *Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	ev.ID = f.nextID
	fr, err := frame("record", ev)
	if err != nil {
		return err
	}
	f.remember(item{ev.time, fr})
	f.broadcast(fr)
	return nil
}

// remember keeps it among the newest f.keep records by time. The logs
// of several instances are read side by side, so records come in out of
// order across instances: the backlog is sorted, not a ring.
func (f *feed) remember(it item) {
	n := len(f.backlog)
	if n == f.keep && f.keep > 0 && !it.time.After(f.backlog[0].time) {
		return // older than all kept
	}
	i := sort.Search(n, func(i int) bool { return f.backlog[i].time.After(it.time) })
	f.backlog = append(f.backlog, item{})
	copy(f.backlog[i+1:], f.backlog[i:])
	f.backlog[i] = it
	if len(f.backlog) > f.keep {
		f.backlog = append(f.backlog[:0], f.backlog[1:]...)
	}
}

// publishInstances replaces the instance list and sends it.
func (f *feed) publishInstances(fr []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.instances = fr
	f.broadcast(fr)
}

// publishTask replaces one task's spend and sends it; a nil frame
// forgets the task.
func (f *feed) publishTask(key string, fr []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fr == nil {
		delete(f.tasks, key)
		return
	}
	f.tasks[key] = fr
	f.broadcast(fr)
}

func (f *feed) broadcast(fr []byte) {
	for s := range f.subs {
		if !s.offer(fr, f.queue) {
			delete(f.subs, s)
		}
	}
}

// subscribe adds a client, and returns what it must show first: the
// instances, the tasks, and the backlog, taken in the same moment as the
// client joined, so that no record falls between the two. It returns
// nil when there are f.maxSubs clients already.
func (f *feed) subscribe() (*sub, [][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subs) >= f.maxSubs {
		return nil, nil
	}
	s := &sub{ready: make(chan struct{}, 1), dropped: make(chan struct{})}
	f.subs[s] = struct{}{}
	var first [][]byte
	if f.instances != nil {
		first = append(first, f.instances)
	}
	for _, fr := range f.tasks {
		first = append(first, fr)
	}
	for _, it := range f.backlog {
		first = append(first, it.frame)
	}
	return s, first
}

func (f *feed) unsubscribe(s *sub) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs, s)
}

// clients is how many streams are open.
func (f *feed) clients() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// offer queues fr unless that would put more than limit bytes in the
// queue: then the client is dropped, and offer says so.
func (s *sub) offer(fr []byte, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return false
	}
	if s.bytes+len(fr) > limit {
		s.gone, s.pending = true, nil
		close(s.dropped)
		return false
	}
	s.pending = append(s.pending, fr)
	s.bytes += len(fr)
	select {
	case s.ready <- struct{}{}:
	default:
	}
	return true
}

// take empties the queue.
func (s *sub) take() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending
	s.pending, s.bytes = nil, 0
	return p
}
