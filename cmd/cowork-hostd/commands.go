package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image/agentbin"
	"github.com/coworkhq/cowork/image/inspect"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/internal/memtrim"
)

// parse reads a subcommand's flags; no positional arguments are taken.
func parse(fs *flag.FlagSet, args []string) error {
	if err := hostdwire.Parse(fs, args); err != nil {
		return usageError{err}
	}
	return nil
}

// run is the daemon of one instance, until it stops.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	name := fs.String("name", instance.DefaultName, "the instance")
	standby := fs.Bool("standby", false, "load the saved guest and hold it paused until a run wakes it (a warm pool clone)")
	if err := parse(fs, args); err != nil {
		fmt.Fprintln(stderr, "cowork-hostd:", err)
		return hostdwire.ExitUsage
	}
	// Signals become a stop before anything else happens: one arriving at
	// any point (an interrupted `cowork start` sends SIGTERM) stops the VM
	// and cleans up, rather than killing hostd and leaving its pid file
	// and sockets behind.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	watchMemProfile(stderr)
	// Give the heap back once a burst (a stream, the guest's downloads) is
	// over: hostd idles most of its life (internal/memtrim).
	go memtrim.New().Run(ctx, time.Second)
	log, _ := hostd.OpenLog(*name, stderr)
	err := hostd.Run(ctx, hostd.Options{Name: *name, Log: log, NewMachine: platformMachine, Standby: *standby})
	switch {
	case errors.Is(err, instance.ErrRunning):
		fmt.Fprintf(stderr, "cowork-hostd: instance %s already has a hostd\n", *name)
		return hostdwire.ExitAlreadyRunning
	case err != nil:
		fmt.Fprintln(stderr, "cowork-hostd:", err)
		return 1
	}
	return 0
}

// inspectCmd prints what the given image and kernel are.
func inspectCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	img := fs.String("image", "", "a disk image")
	kernel := fs.String("kernel", "", "a kernel")
	if err := parse(fs, args); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(inspect.Facts(*img, *kernel))
}

// versionCmd prints this build and the agents it carries.
func versionCmd(args []string, stdout io.Writer) error {
	if err := parse(flag.NewFlagSet("version", flag.ContinueOnError), args); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(hostdwire.This(agentbin.Agents()))
}
