package guestagent

import (
	"bytes"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
)

// bootTimes are when the guest's boot reached the points the agent can
// read itself, as milliseconds since the guest kernel started (0: not
// known). Info reports them so that the host can tell where a slow boot
// spends its time.
type bootTimes struct {
	initStarted, userspaceStarted, agentStarted, agentListening int64
}

// listeningMs is the guest's uptime when the agent began listening, set
// once by MarkListening.
var listeningMs atomic.Int64

// MarkListening records that the agent listens for the host from now on.
// It is a fact about this process, like its start time: main calls it
// once, right after its listener is up.
func MarkListening() {
	if up := uptimeMs(); up > 0 {
		listeningMs.CompareAndSwap(0, up)
	}
}

// startTimes reads PID 1's and this process's start once: they do not
// change, and Info must stay cheap.
var startTimes = sync.OnceValue(func() bootTimes {
	return bootTimes{initStarted: procStartMs("/proc/1/stat"), userspaceStarted: userspaceStartMs(),
		agentStarted: procStartMs("/proc/self/stat")}
})

func readBootTimes() bootTimes {
	t := startTimes()
	t.agentListening = listeningMs.Load()
	return t
}

// userHZ is the unit of /proc/PID/stat's starttime: USER_HZ, which Linux
// fixes at 100 on every architecture its ABI covers.
const userHZ = 100

// procStartMs is a process's start, from its stat file, in milliseconds
// since boot; 0 when it cannot be read.
func procStartMs(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return parseStartTime(b) * 1000 / userHZ
}

// parseStartTime is field 22 of a /proc/PID/stat line (starttime, in
// clock ticks). The command name (field 2) may hold spaces and
// parentheses, so the fields are counted from its last ')'.
func parseStartTime(stat []byte) int64 {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(stat[i+1:]) // f[0] is field 3 (state)
	const idx = 22 - 3
	if len(f) <= idx {
		return 0
	}
	v, err := strconv.ParseInt(string(f[idx]), 10, 64)
	if err != nil || v < 0 || v > 1<<50 {
		return 0
	}
	return v
}

// parseRunInit finds, in the kernel's log, the line the kernel writes when
// it hands over to user space ("[    4.123456] Run /init as init
// process": PID 1 exists from the kernel's first moments, but runs the
// kernel's own initialisation until then) and returns its time in
// milliseconds; 0 when the line is not there (a log that wrapped).
func parseRunInit(klog []byte) int64 {
	for _, line := range bytes.Split(klog, []byte("\n")) {
		if !bytes.Contains(line, []byte("] Run ")) || !bytes.HasSuffix(bytes.TrimSpace(line), []byte(" as init process")) {
			continue
		}
		open, end := bytes.IndexByte(line, '['), bytes.IndexByte(line, ']')
		if open < 0 || end < open {
			return 0
		}
		sec, frac, _ := bytes.Cut(bytes.TrimSpace(line[open+1:end]), []byte("."))
		s, err := strconv.ParseInt(string(sec), 10, 64)
		if err != nil || s < 0 || s > 1<<40 {
			return 0
		}
		ms := s * 1000
		if len(frac) >= 3 {
			if f, err := strconv.ParseInt(string(frac[:3]), 10, 64); err == nil && f >= 0 {
				ms += f
			}
		}
		return ms
	}
	return 0
}
