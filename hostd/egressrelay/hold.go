package egressrelay

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// Holder is where a relay session is held: the network whose relay it
// opens on, and what ends every session there.
type Holder struct {
	Stack *netstack.Stack
	// Closing, when closed, ends every session; Stopped is the error the
	// call then ends with.
	Closing <-chan struct{}
	Stopped string
	Log     *slog.Logger
}

// Hold opens a relay session for r on h's network and holds it for as
// long as the call does: it ends when ctx ends (the caller's connection
// closed), when h closes, when close_session closes it, or at its
// ceiling. The session sent to the caller has baseURL, "" for the caller
// to fill (the egress pod knows its Service by no address a guest uses).
// hostd's control API and the egress pod's sessions port both hold their
// sessions so.
func (h Holder) Hold(ctx context.Context, r netstack.SessionRequest, baseURL string, send func(*controlwire.Session) error) error {
	r.What = ClipWhat(r.What)
	sessions := h.Stack.Sessions()
	sess, err := sessions.OpenRequest(r)
	if err != nil {
		return controlwire.Errorf(controlwire.CodeInvalidArgument, "%v", err)
	}
	defer sessions.Close(sess.ID)
	log := h.Log.With("session", sess.ID)
	if err := h.Stack.CheckEndpoint(ctx, sess); err != nil {
		log.Warn("relay session refused", "err", err)
		return controlwire.Errorf(controlwire.CodeUnavailable, "%v", err)
	}
	log.Info("relay session opened", "endpoint", policy.RedactURL(sess.Endpoint.String()), "expires", sess.Expires.Format(time.RFC3339))
	if err := send(&controlwire.Session{ID: sess.ID, Placeholder: sess.Placeholder, BaseURL: baseURL, Expires: sess.Expires}); err != nil {
		log.Info("relay session closed: its client went away before it began", "err", err)
		return err
	}
	select {
	case <-ctx.Done():
		log.Info("relay session closed: its client's stream ended")
		return nil
	case <-h.Closing:
		log.Info("relay session closed: " + h.Stopped)
		return controlwire.Errorf(controlwire.CodeUnavailable, "%s", h.Stopped)
	case <-sess.Done():
	}
	if errors.Is(sess.Err(), netstack.ErrSessionExpired) {
		log.Info("relay session expired", "ceiling", sess.Expires.Format(time.RFC3339))
		return controlwire.Errorf(controlwire.CodeExpired, "relay session %s reached its ceiling; open a new one", sess.ID)
	}
	log.Info("relay session closed")
	return nil
}

// ClipWhat bounds the client's name for a session, as usage.json keeps
// it and the logs show it: printable, and at most 32 bytes.
func ClipWhat(s string) string {
	s = termsafe.Text(s)
	if len(s) > 32 {
		s = strings.ToValidUTF8(s[:32], "")
	}
	return s
}
