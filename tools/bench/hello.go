//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// helloSource is the bare Go program the CLI's start is measured against:
// what any Go binary pays to be loaded, start its runtime, print a line
// and exit. `cowork version` can only beat it by not being written in Go.
const helloSource = `package main

import "os"

func main() { os.Stdout.WriteString("hello\n") }
`

// buildHello builds helloSource in dir the way the Makefile builds
// cowork (static, trimmed, stripped), so the two differ only in what the
// program does.
func buildHello(dir string) (string, error) {
	return buildGo(dir, "hello", helloSource, "")
}

// floorSource runs /bin/true N times the way the agent starts a process
// (fork, exec in a new session, wait) and prints the median in
// microseconds: run in the guest, the least any exec there can cost,
// whatever carries the request.
const floorSource = `package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"
)

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	var ds []time.Duration
	for range n {
		t := time.Now()
		pid, err := syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{
			Env: os.Environ(), Files: []uintptr{0, 1, 2}, Sys: &syscall.SysProcAttr{Setsid: true}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		ds = append(ds, time.Since(t))
	}
	slices.Sort(ds)
	fmt.Println(ds[len(ds)/2].Microseconds())
}
`

// buildFloor builds floorSource for the guest's architecture into dir.
func buildFloor(dir, goarch string) (string, error) {
	return buildGo(dir, "exec-floor", floorSource, goarch)
}

// buildGo builds the one-file program src as dir/name (static, trimmed,
// stripped), for goarch when it is not "".
func buildGo(dir, name, src, goarch string) (string, error) {
	srcDir := filepath.Join(dir, name+"-src")
	if err := os.MkdirAll(srcDir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(srcDir, "main.go"), []byte(src), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(srcDir, "go.mod"), []byte("module "+name+"\n\ngo 1.22\n"), 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if goarch != "" {
		cmd.Env = append(cmd.Env, "GOOS=linux", "GOARCH="+goarch)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %v\n%s", name, err, out)
	}
	return bin, nil
}
