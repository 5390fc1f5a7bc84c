// Package cdp drives a headless Chromium over the DevTools protocol, for
// tests: the dashboard's page is loaded, read and typed into by a real
// browser. It talks over --remote-debugging-pipe (the browser reads
// commands on fd 3 and writes on fd 4, each message ending in a NUL), so
// it needs no WebSocket client, and no other program on the machine can
// reach the browser through a debugging port.
package cdp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Browser is a running headless Chromium.
type Browser struct {
	cmd    *exec.Cmd
	w      *os.File
	stderr *strings.Builder

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan reply
	onEvent func(Event)
	err     error // why the connection ended
	done    chan struct{}
}

// Event is a message the browser sent of its own accord.
type Event struct {
	Session string
	Method  string
	Params  json.RawMessage
}

type reply struct {
	Result json.RawMessage
	Err    error
}

// Launch starts bin (chromium) headless with args added, its profile in
// dir; onEvent gets every event, in order, on the reading goroutine (it
// must not block).
func Launch(bin, dir string, onEvent func(Event), args ...string) (*Browser, error) {
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	argv := append([]string{"--headless", "--remote-debugging-pipe", "--user-data-dir=" + dir,
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio", "--disable-gpu",
		"--disable-dev-shm-usage", "--password-store=basic", "--use-mock-keychain"}, args...)
	if os.Geteuid() == 0 {
		argv = append(argv, "--no-sandbox") // Chromium refuses to run as root with its sandbox
	}
	argv = append(argv, "about:blank")
	b := &Browser{cmd: exec.Command(bin, argv...), w: cmdW, stderr: &strings.Builder{}, pending: map[int64]chan reply{},
		onEvent: onEvent, done: make(chan struct{})}
	b.cmd.ExtraFiles = []*os.File{cmdR, evW}
	b.cmd.Stderr = &syncWriter{b: b.stderr}
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	cmdR.Close()
	evW.Close()
	go b.read(evR)
	return b, nil
}

// syncWriter guards the browser's stderr while it is written.
type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() < 64<<10 {
		s.b.Write(p)
	}
	return len(p), nil
}

func (b *Browser) read(r *os.File) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 1<<20)
	var err error
	for {
		var msg []byte
		msg, err = br.ReadBytes(0)
		if err != nil {
			break
		}
		var m struct {
			ID        int64           `json:"id"`
			Method    string          `json:"method"`
			SessionID string          `json:"sessionId"`
			Params    json.RawMessage `json:"params"`
			Result    json.RawMessage `json:"result"`
			Error     *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err = json.Unmarshal(msg[:len(msg)-1], &m); err != nil {
			break
		}
		if m.ID == 0 {
			if b.onEvent != nil {
				b.onEvent(Event{Session: m.SessionID, Method: m.Method, Params: m.Params})
			}
			continue
		}
		b.mu.Lock()
		ch := b.pending[m.ID]
		delete(b.pending, m.ID)
		b.mu.Unlock()
		if ch == nil {
			continue
		}
		rep := reply{Result: m.Result}
		if m.Error != nil {
			rep.Err = fmt.Errorf("%d %s", m.Error.Code, m.Error.Message)
		}
		ch <- rep
	}
	b.mu.Lock()
	b.err = fmt.Errorf("the browser's pipe ended: %v", err)
	for id, ch := range b.pending {
		ch <- reply{Err: b.err}
		delete(b.pending, id)
	}
	b.mu.Unlock()
	close(b.done)
}

// Call sends method with params to the browser, or to the target of
// session when not "", and decodes its result into result (when not nil).
func (b *Browser) Call(ctx context.Context, session, method string, params, result any) error {
	b.mu.Lock()
	if b.err != nil {
		b.mu.Unlock()
		return b.err
	}
	b.nextID++
	id := b.nextID
	ch := make(chan reply, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	out, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if _, err := b.w.Write(append(out, 0)); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case rep := <-ch:
		if rep.Err != nil {
			return fmt.Errorf("%s: %w", method, rep.Err)
		}
		if result != nil {
			return json.Unmarshal(rep.Result, result)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// Page opens a new tab on url and returns its session, for the calls
// to the page.
func (b *Browser) Page(ctx context.Context, url string) (string, error) {
	var target struct{ TargetID string }
	if err := b.Call(ctx, "", "Target.createTarget", map[string]any{"url": url}, &target); err != nil {
		return "", err
	}
	var att struct{ SessionID string }
	err := b.Call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att)
	return att.SessionID, err
}

// Eval evaluates expr in the page of session, and decodes its value
// (returned by value: JSON) into result.
func (b *Browser) Eval(ctx context.Context, session, expr string, result any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := b.Call(ctx, session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r); err != nil {
		return err
	}
	if e := r.ExceptionDetails; e != nil {
		return fmt.Errorf("%s: %s %s", expr, e.Text, e.Exception.Description)
	}
	if result == nil || len(r.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(r.Result.Value, result)
}

// Stderr is what the browser printed.
func (b *Browser) Stderr() string {
	w := b.cmd.Stderr.(*syncWriter)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// Close ends the browser: politely, then by force.
func (b *Browser) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = b.Call(ctx, "", "Browser.close", nil, nil)
	exited := make(chan error, 1)
	go func() { exited <- b.cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-exited
	}
	b.w.Close()
	<-b.done
	if b.err != nil && !strings.Contains(b.err.Error(), "EOF") {
		return errors.New(b.err.Error())
	}
	return nil
}
