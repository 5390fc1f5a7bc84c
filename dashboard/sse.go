package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// writeTimeout bounds one write to a client: a page that stops reading
// is dropped rather than kept with its queue.
const writeTimeout = 10 * time.Second

// keepAlive is how often an idle stream gets a comment, so that the page
// notices a server gone and the connection is not timed out between.
const keepAlive = 15 * time.Second

// events streams the feed to one page: hello, the instances, the tasks
// and the backlog, then each record, instance list and task as they
// change, until the page goes, the server stops, or the page falls
// behind by more than its queue (it then reconnects, and starts again).
func (s *Server) events(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	sub, first := s.feed.subscribe()
	if sub == nil {
		refuse(w, http.StatusServiceUnavailable, "too many pages are open; close one")
		return
	}
	defer s.feed.unsubscribe(sub)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	hello, _ := frame("hello", map[string]any{"backlog": s.feed.keep, "time": time.Now()})
	write := func(frames ...[]byte) bool {
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		for _, fr := range frames {
			if _, err := w.Write(fr); err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	if !write(append([][]byte{[]byte("retry: 2000\n\n"), hello}, first...)...) {
		return
	}
	ping := time.NewTicker(keepAlive)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.Context().Done():
			return
		case <-sub.dropped:
			return
		case <-ping.C:
			if !write([]byte(": ping\n\n")) {
				return
			}
		case <-sub.ready:
			if !write(sub.take()...) {
				return
			}
		}
	}
}

// state is what a page gets when it connects, as one JSON document:
// {"instances": [...], "tasks": [...], "records": [...]} for a script,
// or a test that cannot read a stream.
func (s *Server) state(w http.ResponseWriter, r *http.Request) {
	st := struct {
		Instances json.RawMessage   `json:"instances"`
		Tasks     []json.RawMessage `json:"tasks"`
		Records   []json.RawMessage `json:"records"`
	}{Instances: []byte("[]"), Tasks: []json.RawMessage{}, Records: []json.RawMessage{}}
	s.feed.mu.Lock()
	if s.feed.instances != nil {
		st.Instances = frameData(s.feed.instances)
	}
	for _, fr := range s.feed.tasks {
		st.Tasks = append(st.Tasks, frameData(fr))
	}
	for _, it := range s.feed.backlog {
		st.Records = append(st.Records, frameData(it.frame))
	}
	s.feed.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(&st)
}

// frameData is the JSON of one event frame.
func frameData(fr []byte) json.RawMessage {
	_, after, _ := bytes.Cut(fr, []byte("\ndata: "))
	return bytes.TrimSuffix(after, []byte("\n\n"))
}
