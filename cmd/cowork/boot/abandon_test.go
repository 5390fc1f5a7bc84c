package boot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

// fakeHostdEnv makes this test binary, launched by Start as
// `$COWORK_HOSTD run --name NAME`, a stand-in hostd whose guest boots its kernel
// and never reaches its agent.
const fakeHostdEnv = "COWORK_BOOT_TEST_FAKE_HOSTD"

func TestMain(m *testing.M) {
	if os.Getenv(fakeHostdEnv) != "" && len(os.Args) == 4 && os.Args[1] == "run" {
		os.Exit(fakeHostd(os.Args[3]))
	}
	os.Exit(m.Run())
}

// fakeHostd serves until it is stopped, through its socket or by SIGTERM,
// and notes how in the instance's directory (stopped-by).
func fakeHostd(name string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	p, err := instance.PathsFor(name)
	if err != nil {
		return 1
	}
	os.WriteFile(p.SerialLog(), []byte("[    0.000000] Booting Linux on physical CPU 0x0\nwaiting for an agent that never comes\n"), 0o600)
	h, err := instancetest.Serve(p, cowork.PhaseVMStarted, cowork.PhaseKernel)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	how := "signal"
	select {
	case <-h.Done():
		how = fmt.Sprintf("%+v", h.Stops())
	case <-sigs:
		h.Stop()
	}
	os.WriteFile(filepath.Join(p.Dir(), "stopped-by"), []byte(how), 0o600)
	return 0
}

// A start on a ready instance reports it and leaves it, however short its
// --timeout: the timeout is for booting, and there is nothing to boot.
func TestStartLeavesAReadyInstance(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	h := instancetest.Running(t, p, true)
	ios, _, _, errOut := iostreams.Test()
	if err := Start(context.Background(), ios, instance.DefaultName, time.Nanosecond); err != nil {
		t.Fatalf("start: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut.String(), "sandbox is already running") {
		t.Errorf("stderr: %s", errOut)
	}
	if s := h.Stops(); len(s) != 0 || !instance.Held(p) {
		t.Errorf("start stopped a running instance: %v", s)
	}
}

// A start that finds an instance booting (another start launched it) and
// runs out of time leaves it booting: it is not this start's to stop.
func TestStartLeavesABootingInstance(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	h := instancetest.Running(t, p, false)
	ios, _, _, errOut := iostreams.Test()
	err := Start(context.Background(), ios, instance.DefaultName, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "sandbox did not become ready within 200ms; sandbox was already starting (another `cowork start`?) and is left running") {
		t.Fatalf("start: %v\n%s", err, errOut)
	}
	if s := h.Stops(); len(s) != 0 || !instance.Held(p) {
		t.Errorf("start stopped an instance it did not boot: %v", s)
	}
}

// A start that boots the VM itself and runs out of time stops it, says
// how far the guest got, and where its console is.
func TestStartStopsTheVMItBooted(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	t.Setenv(fakeHostdEnv, "1")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(hostdwire.Env, exe)
	ios, _, _, errOut := iostreams.Test()
	err = Start(context.Background(), ios, instance.DefaultName, 5*time.Second)
	if err == nil {
		t.Fatal("a guest that is never ready: no error")
	}
	msg := err.Error()
	first, _, _ := strings.Cut(msg, "\n")
	if !strings.HasPrefix(first, "sandbox did not become ready within 5s: ") || !strings.HasSuffix(first, "; stopped the VM this start booted") ||
		!strings.Contains(msg, "\nthe guest's console log is "+p.SerialLog()+"\n") || !strings.Contains(msg, "waiting for an agent that never comes") {
		t.Errorf("the error:\n%s", msg)
	}
	// The stand-in may not have served yet when the time was up, on a
	// loaded machine; when it had said its kernel booted, the error says so.
	if strings.Contains(errOut.String(), "kernel") && !strings.Contains(first, "the guest booted but never reached its agent") {
		t.Errorf("the kernel booted, yet the error says: %s\nprogress:\n%s", first, errOut)
	}
	if instance.Held(p) {
		t.Error("the hostd this start launched still holds the instance")
	}
	if by, err := os.ReadFile(filepath.Join(p.Dir(), "stopped-by")); err != nil || (string(by) != "signal" && !strings.Contains(string(by), "Force:true")) {
		t.Errorf("the launched hostd was stopped by %q (%v), want its power cut", by, err)
	}
}

func TestAbandonedSaysWhyAndWhere(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	timedOut := context.DeadlineExceeded
	for _, c := range []struct {
		ab   cowork.AbandonedError
		last cowork.Phase
		want string
	}{
		{cowork.AbandonedError{Err: timedOut, Launched: true}, cowork.PhaseKernel,
			"sandbox did not become ready within 1m0s: the guest booted but never reached its agent; stopped the VM this start booted\nthe guest's console log is " + p.SerialLog() + "\n"},
		{cowork.AbandonedError{Err: timedOut, Launched: true}, cowork.PhaseVMStarted, "the guest never got to its kernel"},
		{cowork.AbandonedError{Err: timedOut, Launched: true}, cowork.PhaseProvisioning, "its provisioning had not finished"},
		{cowork.AbandonedError{Err: timedOut, Launched: true, StopErr: errors.New("hostd (pid 7) did not stop")}, cowork.PhaseKernel, "(stopping failed: hostd (pid 7) did not stop)"},
	} {
		ios, _, _, _ := iostreams.Test()
		err := abandoned(ios, instance.DefaultName, time.Minute, &c.ab, c.last)
		if err == nil || cmdutil.ExitCode(err) != 1 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v after %s: %v, want %q", c.ab, c.last, err, c.want)
		}
	}

	ios, _, _, errOut := iostreams.Test()
	err := abandoned(ios, instance.DefaultName, time.Minute, &cowork.AbandonedError{Err: context.Canceled, Launched: true}, cowork.PhaseKernel)
	if cmdutil.ExitCode(err) != 130 || errOut.String() != "\ninterrupted; stopped the VM this start booted\n" {
		t.Errorf("interrupted: %v, %q", err, errOut)
	}
}
