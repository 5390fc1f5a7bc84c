package hostd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
)

// learnClientEnv makes the test binary a client that puts the network in
// learn mode on the control socket it names, says so, and waits to be
// killed.
const learnClientEnv = "COWORK_TEST_LEARN_CLIENT"

func learnClient(sock string) error {
	stream, err := controlwire.NewClient(sock).Learn(context.Background(), controlwire.LearnRequest{})
	if err != nil {
		return err
	}
	if _, err := stream.Recv(); err != nil {
		return err
	}
	fmt.Println("learning")
	select {} // until killed
}

// waitLearning waits until the network's learn mode is as want.
func (c *controlTest) waitLearning(t *testing.T, want bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for c.net.Learning() != want {
		if time.Now().After(deadline) {
			t.Fatalf("learning is %v after a minute, want %v\nhostd's log:\n%s", !want, want, c.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Learn mode lasts as long as its stream, and says when it began and
// its ceiling.
func TestLearnModeLastsAsLongAsItsStream(t *testing.T) {
	c := newControlTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.api.Learn(ctx, controlwire.LearnRequest{TTLSeconds: 3600})
	if err != nil {
		t.Fatal(err)
	}
	l, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if d := l.Until.Sub(l.Since); d != time.Hour || time.Since(l.Since) > time.Minute {
		t.Errorf("learning %+v", l)
	}
	if !c.net.Learning() {
		t.Fatal("not learning once the call answered")
	}
	cancel()
	c.waitLearning(t, false)
	if !strings.Contains(c.log.String(), "learn mode off: its client's stream ended") {
		t.Errorf("hostd's log:\n%s", c.log.String())
	}
}

// A client killed with SIGKILL ends nothing itself: its socket closing
// ends learn mode, so a crashed CLI never leaves the guest learning.
func TestLearnModeEndsWhenItsClientIsKilled(t *testing.T) {
	c := newControlTest(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), learnClientEnv+"="+c.sock)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	said := make(chan struct{})
	go func() {
		b := make([]byte, 9)
		io.ReadFull(out, b)
		close(said)
		io.Copy(io.Discard, out)
	}()
	select {
	case <-said:
	case <-time.After(time.Minute):
		t.Fatalf("the client did not begin learning in a minute: %s", stderr.String())
	}
	c.waitLearning(t, true)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	c.waitLearning(t, false)
}

// The ceiling ends learn mode and its stream, which says so; so does
// hostd's exit.
func TestLearnModeEndsAtItsCeilingAndAtExit(t *testing.T) {
	c := newControlTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := c.api.Learn(ctx, controlwire.LearnRequest{TTLSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, controlwire.ErrExpired) {
		t.Fatalf("learn mode past its ceiling ended with %v, want ErrExpired", err)
	}
	c.waitLearning(t, false)

	stream, err = c.api.Learn(ctx, controlwire.LearnRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	close(c.d.closing)
	if _, err := stream.Recv(); !errors.Is(err, controlwire.ErrUnavailable) {
		t.Fatalf("learn mode at hostd's exit ended with %v, want Unavailable", err)
	}
	c.waitLearning(t, false)
}

// Learn mode lasts 8 hours at most, whatever its client asks.
func TestLearnModeIsCappedAtItsCeiling(t *testing.T) {
	c := newControlTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := c.api.Learn(ctx, controlwire.LearnRequest{TTLSeconds: 9 * 3600})
	if err != nil {
		t.Fatal(err)
	}
	l, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if d := l.Until.Sub(l.Since); d != 8*time.Hour {
		t.Errorf("learn mode asked for 9 hours lasts %s, want 8h", d)
	}
}
