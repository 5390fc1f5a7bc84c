package guestagent

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type systemInfo struct {
	bootID, hostname, kernel string
	uptime                   time.Duration
}

func readSystemInfo() systemInfo {
	var si systemInfo
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		si.bootID = strings.TrimSpace(string(b))
	}
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) == nil {
		si.uptime = time.Duration(ts.Nano())
	}
	si.hostname, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		si.kernel = unix.ByteSliceToString(u.Release[:])
	}
	return si
}

// askPidfd has the kernel return the child's pidfd into *fd (-1 on a
// kernel without pidfds).
func askPidfd(attrs *syscall.SysProcAttr, fd *int) { attrs.PidFD = fd }

// hasExited tells, without reaping it, whether the process of pidfd has
// ended; an error ends the wait too, leaving the answer to Wait.
func hasExited(pidfd uintptr) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PIDFD, int(pidfd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err != nil || info.Signo != 0
}

func setSystemClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}

// powerOff asks systemd for a clean poweroff when it runs the guest, and
// otherwise syncs and cuts the power itself.
func powerOff() error {
	unix.Sync()
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		if err := exec.Command("systemctl", "poweroff").Run(); err == nil {
			return nil
		}
	}
	return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

// sessionMembers lists the processes whose session id is sid, from /proc.
func sessionMembers(sid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...; comm may hold spaces and parens.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 3 && f[3] == strconv.Itoa(sid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pipeSize is what output pipes are grown to: a process then writes on
// while the agent sends what it read, instead of the two taking turns
// every 64 KiB.
const pipeSize = 1 << 20

func growPipe(f *os.File) {
	// Not f.Fd(): that would put the pipe in blocking mode, and a blocked
	// read could then no longer be interrupted by Close.
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}
}

// childPipe makes a pipe for one of a child's stdio streams: the agent's
// end (the read end when parentReads) goes into the runtime's poller, the
// child's end stays a plain blocking descriptor. os.Pipe would register
// both, and the child's end, which the agent only hands over and closes,
// would cost each exec an epoll registration, its removal and the mode
// changes around them.
func childPipe(parentReads bool) (parent, child *os.File, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, os.NewSyscallError("pipe2", err)
	}
	ours, theirs := p[1], p[0]
	if parentReads {
		ours, theirs = p[0], p[1]
	}
	if err := unix.SetNonblock(ours, true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, nil, os.NewSyscallError("fcntl", err)
	}
	// NewFile sees the non-blocking mode and polls that end.
	return os.NewFile(uintptr(ours), "|agent"), os.NewFile(uintptr(theirs), "|child"), nil
}

// uptimeMs is CLOCK_BOOTTIME, the clock of /proc/uptime, in milliseconds;
// 0 when it cannot be read.
func uptimeMs() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0
	}
	return ts.Nano() / 1e6
}

// userspaceStartMs is when the kernel started user space (its init), from
// the kernel log; 0 when it cannot tell. The agent reads the log once.
func userspaceStartMs() int64 {
	const readAll, sizeBuffer = 3, 10 // SYSLOG_ACTION_*
	n, err := unix.Klogctl(sizeBuffer, nil)
	if err != nil || n <= 0 {
		return 0
	}
	buf := make([]byte, min(n, 4<<20))
	n, err = unix.Klogctl(readAll, buf)
	if err != nil {
		return 0
	}
	return parseRunInit(buf[:n])
}

// markedProcesses lists the processes whose environment carries
// markerVar=marker: an exec's descendants, including those in sessions
// of their own. A process that replaced its environment at exec escapes
// it (it then did so on purpose).
func markedProcesses(marker string) []int {
	if marker == "" {
		return nil
	}
	want := []byte(markerVar + "=" + marker + "\x00")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		if bytes.HasPrefix(env, want) || bytes.Contains(env, append([]byte{0}, want...)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
