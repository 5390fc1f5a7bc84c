package hostd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"time"

	"github.com/coworkhq/cowork/hostd/controlpb"
	"github.com/coworkhq/cowork/hostd/instance"
)

// ExitAlreadyRunning is `cowork hostd`'s exit code when another hostd holds
// the instance; whoever launched it then follows that one instead.
const ExitAlreadyRunning = 3

// ErrAlreadyRunning means Start found the instance up and ready.
var ErrAlreadyRunning = errors.New("already running")

// Start boots the named instance, launching its hostd unless one runs, and
// reports each boot event to progress until the instance is ready. When
// ctx ends first, Start returns ctx's error and leaves the instance as it
// is: stopping it is the caller's choice.
func Start(ctx context.Context, exe, name string, progress func(*controlpb.Event)) error {
	paths, err := instance.PathsFor(name)
	if err != nil {
		return err
	}
	if _, err := instance.Load(name); err != nil {
		return err
	}
	running := instance.Held(paths)
	if !running {
		cmd, err := Launch(exe, name)
		if err != nil {
			return err
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		err = waitForControl(ctx, paths, exited)
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee) && ee.ExitCode() == ExitAlreadyRunning:
			running = true // another start won the race; follow its hostd
		case errors.As(err, new(*hostdExit)):
			return fmt.Errorf("%w%s", err, Diagnostics(paths))
		default:
			return err
		}
	}
	if running {
		if err := waitForControl(ctx, paths, nil); err != nil {
			return err
		}
	}
	c, err := Dial(name)
	if err != nil {
		return err
	}
	defer c.Close()
	if running {
		if st, err := c.Status(ctx); err == nil && st.Ready {
			return ErrAlreadyRunning
		}
	}
	return c.follow(ctx, progress)
}

// follow reports events until the boot ends one way or the other.
func (c *Client) follow(ctx context.Context, progress func(*controlpb.Event)) error {
	stream, err := c.Events(ctx)
	if err != nil {
		return err
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("hostd exited")
			}
			return fmt.Errorf("instance %s: %w%s", c.Name, err, Diagnostics(c.Paths))
		}
		if progress != nil {
			progress(ev)
		}
		switch ev.Phase {
		case controlpb.Phase_READY:
			return nil
		case controlpb.Phase_FAILED, controlpb.Phase_STOPPED:
			msg := ev.Message
			if ev.Error != "" {
				msg += ": " + ev.Error
			}
			return fmt.Errorf("instance %s did not start: %s%s", c.Name, msg, Diagnostics(c.Paths))
		}
	}
}

// WaitStopped waits until the instance's hostd is gone.
func WaitStopped(ctx context.Context, paths instance.Paths) error {
	for instance.Held(paths) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
