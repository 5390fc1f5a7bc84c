package hostd

import (
	"context"
	"errors"
	"io"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/egressrelay"
)

// SessionOpener is a Machine's optional capability: a guest that is not
// on hostd's own network (a cluster's, instance.Config.Remote) has its
// credential relay elsewhere, and the Machine opens its sessions there.
// The credential is not hostd's to give: the request carries none, and
// the relay uses its own (a cluster's Secret).
type SessionOpener interface {
	// OpenSession opens a session that lives until ctx ends, or until
	// the relay ends it: done then yields why (nil: it was closed).
	OpenSession(ctx context.Context, req controlwire.OpenSessionRequest) (sess *controlwire.Session, done <-chan error, err error)
	// CloseSession ends a session by its id and says what it spent.
	CloseSession(ctx context.Context, id string) (*controlwire.SessionUsage, error)
}

// sessionOpener is the running Machine's SessionOpener, for a remote
// instance; ok is false for a local one, whose relay is hostd's.
func (s *controlServer) sessionOpener() (so SessionOpener, ok bool, err error) {
	d := s.d
	if d.cfg == nil || !d.cfg.Remote() {
		return nil, false, nil
	}
	d.mu.Lock()
	vm := d.vm
	d.mu.Unlock()
	if vm == nil {
		return nil, true, controlwire.Errorf(controlwire.CodeUnavailable, "the guest is not running; start it with `cowork start`")
	}
	so, ok = vm.(SessionOpener)
	if !ok {
		return nil, true, controlwire.Errorf(controlwire.CodeUnimplemented, "this instance's backend has no credential relay")
	}
	return so, true, nil
}

// openRemoteSession is OpenSession for a guest whose relay is the
// Machine's.
func (s *controlServer) openRemoteSession(ctx context.Context, so SessionOpener, req controlwire.OpenSessionRequest, send func(*controlwire.Session) error) error {
	if req.APIKey != "" || req.AuthToken != "" {
		return controlwire.Errorf(controlwire.CodeInvalidArgument, "this instance runs on a cluster, whose relay uses the API key of the namespace's Secret: a session carries no credential to it")
	}
	req.What = egressrelay.ClipWhat(req.What)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the session, should it not have ended
	sess, done, err := so.OpenSession(ctx, req)
	if err != nil {
		s.d.log.Warn("relay session refused", "err", err)
		var ce *controlwire.Error
		if errors.As(err, &ce) {
			return err
		}
		return controlwire.Errorf(controlwire.CodeUnavailable, "open a session on the cluster's relay: %v", err)
	}
	log := s.d.log.With("session", sess.ID)
	log.Info("relay session opened on the cluster", "expires", sess.Expires)
	if err := send(sess); err != nil {
		log.Info("relay session closed: its client went away before it began", "err", err)
		return err
	}
	select {
	case <-ctx.Done():
		log.Info("relay session closed: its client's stream ended")
		return nil
	case <-s.d.closing:
		log.Info("relay session closed: hostd is exiting")
		return controlwire.Errorf(controlwire.CodeUnavailable, "the instance stopped")
	case err := <-done:
		if err != nil && !errors.Is(err, io.EOF) {
			log.Info("relay session ended by the cluster's relay", "err", err)
			return err
		}
		log.Info("relay session closed")
		return nil
	}
}
