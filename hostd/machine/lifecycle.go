package machine

import "sync"

// Lifecycle is the state bookkeeping every Machine shares, written once so
// that the backends (and fakes of a Machine in tests) agree on it: the
// State, the Done channel, why the VM stopped (Err), and whether hostd asked
// it to stop. A backend embeds it, which gives it State, Done and Err, and
// reports what its hypervisor does through SetState, MarkStopping, Exit and
// Fail. Stopped is final: Done closes once, and nothing changes after.
//
// The zero value is a VM that is Starting. It is safe for concurrent use.
type Lifecycle struct {
	mu       sync.Mutex
	state    State // "" is Starting
	stopping bool  // hostd asked the VM to stop
	done     chan struct{}
	err      error
}

// State is the VM's current state.
func (l *Lifecycle) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state == "" {
		return Starting
	}
	return l.state
}

// Done is closed once the VM has stopped, for any reason.
func (l *Lifecycle) Done() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.doneLocked()
}

// Err says why the VM stopped when nobody asked it to (see Exit), or why
// it failed (see Fail); nil while it runs.
func (l *Lifecycle) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// SetState records what the hypervisor reports. Once the VM is stopped,
// or asked to stop, it no longer goes back to Starting or Running: a late
// report of the hypervisor does not undo a Stop. Use Exit or Fail, not
// SetState(Stopped), for the end.
func (l *Lifecycle) SetState(s State) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.state == Stopped || s == Stopped:
	case l.stopping && s != Stopping:
	default:
		l.state = s
	}
}

// MarkStopping records that hostd asked the VM to stop, before the backend
// asks the guest: from then on the VM going down is no surprise, and Exit
// keeps Err nil.
func (l *Lifecycle) MarkStopping() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopping = true
	if l.state != Stopped {
		l.state = Stopping
	}
}

// Exit records that the VM stopped, and why it did when nobody asked it to
// (unasked): the reason is dropped when MarkStopping came first. It
// reports whether this call stopped the VM (false: it was stopped already,
// and nothing changed).
func (l *Lifecycle) Exit(unasked error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopping {
		unasked = nil
	}
	return l.stopLocked(unasked)
}

// Fail records that the VM stopped because of err, asked to stop or not:
// it never ran, or the hypervisor broke. It reports whether this call
// stopped the VM, as Exit.
func (l *Lifecycle) Fail(err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopLocked(err)
}

func (l *Lifecycle) stopLocked(err error) bool {
	if l.state == Stopped {
		return false
	}
	l.state, l.err = Stopped, err
	close(l.doneLocked())
	return true
}

func (l *Lifecycle) doneLocked() chan struct{} {
	if l.done == nil {
		l.done = make(chan struct{})
	}
	return l.done
}
