//go:build !linux

package guestagent

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// The agent runs in Linux guests; elsewhere it builds (for development and
// the darwin type check) with these reduced stand-ins.

type systemInfo struct {
	bootID, hostname, kernel string
	uptime                   time.Duration
}

func readSystemInfo() systemInfo {
	h, _ := os.Hostname()
	return systemInfo{hostname: h}
}

var errNotLinux = errors.New("only supported in a Linux guest")

func setSystemClock(time.Time) error { return errNotLinux }

func powerOff() error { return errNotLinux }

func sessionMembers(int) []int { return nil }

func markedProcesses(string) []int { return nil }

func growPipe(*os.File) {}

// askPidfd leaves *fd at -1: no pidfds here, and the exit is waited for
// by Wait alone.
func askPidfd(*syscall.SysProcAttr, *int) {}

func hasExited(uintptr) bool { return true }

// childPipe returns the agent's end and the child's end of a new pipe.
func childPipe(parentReads bool) (parent, child *os.File, err error) {
	r, w, err := os.Pipe()
	if parentReads {
		return r, w, err
	}
	return w, r, err
}

func uptimeMs() int64 { return 0 }

func userspaceStartMs() int64 { return 0 }
