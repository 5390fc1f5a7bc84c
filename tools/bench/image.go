//go:build linux

package main

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/coworkhq/cowork/image"
)

// imageSection measures qcow2 to raw against qemu-img on the same file,
// and the phases of a `cowork init` of the e2e guest.
func imageSection(t *table, runs int) error {
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		progress("no qemu-img: skipping the image section (apt install qemu-utils)")
		return nil
	}
	dir, err := os.MkdirTemp("", "cowork-bench-img")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src := os.Getenv("COWORK_E2E_CLOUD_DISK") // a real file system in qcow2
	if src == "" {
		if src, err = syntheticQcow2(qemuImg, dir); err != nil {
			return err
		}
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	info, _ := exec.Command(qemuImg, "info", "--output=json", src).Output()
	virtual := virtualSize(string(info))
	progress("image: %d runs each of qcow2 (%d MiB file, %d MiB virtual) to raw, interleaved", runs, st.Size()>>20, virtual>>20)
	ours := filepath.Join(dir, "ours.raw")
	theirs := filepath.Join(dir, "qemu-img.raw")
	s, err := interleave(runs, []func() (time.Duration, error){
		timed(func() error { os.Remove(ours); return image.MakeDisk(src, ours, virtual, nil) }),
		timed(func() error {
			os.Remove(theirs)
			out, err := exec.Command(qemuImg, "convert", "-O", "raw", src, theirs).CombinedOutput()
			if err != nil {
				return fmt.Errorf("qemu-img: %v %s", err, out)
			}
			return nil
		}),
	})
	if err != nil {
		return err
	}
	r := ratio(s[1].p50(), s[0].p50())
	t.section("image")
	mb := func(d time.Duration) string { return fmt.Sprintf("%.0f MB/s (%.2f s)", mbps(virtual, d), d.Seconds()) }
	t.add("qcow2 → sparse raw: ours (go-qcow2reader) ÷ qemu-img convert, by virtual size", mb(s[0].p50()), mb(s[1].p50()), r, "≥ 1.0×", r >= 1.0)
	return nil
}

// syntheticQcow2 is a 1 GiB image with 256 MiB of random data in blocks.
func syntheticQcow2(qemuImg, dir string) (string, error) {
	raw := filepath.Join(dir, "synthetic.raw")
	f, err := os.Create(raw)
	if err != nil {
		return "", err
	}
	f.Truncate(1 << 30)
	buf := make([]byte, 4<<20)
	for off := int64(0); off < 1<<30; off += 16 << 20 {
		rand.Read(buf)
		f.WriteAt(buf, off)
	}
	f.Close()
	q := filepath.Join(dir, "synthetic.qcow2")
	if out, err := exec.Command(qemuImg, "convert", "-O", "qcow2", raw, q).CombinedOutput(); err != nil {
		return "", fmt.Errorf("qemu-img: %v %s", err, out)
	}
	os.Remove(raw)
	return q, nil
}

var virtualRE = regexp.MustCompile(`"virtual-size":\s*(\d+)`)

func virtualSize(info string) int64 {
	m := virtualRE.FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	var n int64
	fmt.Sscan(m[1], &n)
	return n
}

// initPhases times one `cowork init` of the e2e guest from its raw disk,
// reading the phases from init's own progress lines.
func initPhases(t *table, cowork string, args []string) error {
	return timeInit(t, exec.Command(cowork, args...), "`cowork init`", "e2e guest, raw disk")
}

// initSteps are init's steps before the boot, each ending in a line
// "download  done (1.5s)"; the boot's phases print as "[  8.4s] phase".
var (
	initStep  = regexp.MustCompile(`^(download|verify|convert)\s.*done \(([^)]+)\)`) // "1.5s", "900ms"
	initPhase = regexp.MustCompile(`^\[\s*([0-9.]+)s\] ([^(;:]*)`)
	stepDone  = map[string]string{"download": "image downloaded", "verify": "image verified", "convert": "image converted"}
)

// timeInit runs one init and adds a row (named row → step) per step and
// boot phase it reported, then its total.
func timeInit(t *table, cmd *exec.Cmd, row, what string) error {
	_, err := timeInitTotal(t, cmd, row, what)
	return err
}

// timeInitTotal is timeInit, and returns the init's whole time.
func timeInitTotal(t *table, cmd *exec.Cmd, row, what string) (time.Duration, error) {
	began := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("cowork init: %v\n%s", err, out)
	}
	total := time.Since(began)
	seen := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if m := initStep.FindStringSubmatch(line); m != nil {
			if d, err := time.ParseDuration(m[2]); err == nil {
				t.add(row+" → "+stepDone[m[1]], secs(d), "", 0, "", false)
			}
		}
		// Provisioning reports each step it reaches ("provisioning:
		// installing packages") after its phase line ("provisioning the
		// guest"): a phase's first line is when it began.
		if m := initPhase.FindStringSubmatch(line); m != nil {
			p := strings.TrimSpace(m[2])
			if !seenPhase(seen, p) {
				seen[p] = true
				t.add(row+" → "+p, m[1]+" s", "", 0, "", false)
			}
		}
	}
	t.add(fmt.Sprintf("%s total (%s)", row, what), secs(total), "", 0, "", false)
	return total, nil
}

// initFromURL times an init whose image comes over HTTP: the cloud-image
// stand-in (Debian with systemd and cloud-init, qcow2) served on loopback
// and checked against its sha256, converted, booted, and provisioned by
// cloud-init through the network stack (apt through the proxy).
//
// The first init keeps its provisioned disk as a golden disk; a second
// init of the same image and provisioning (args with --name second) is
// then timed against it, and a third, not started (--name third), gives
// the disk space of a clone right after its creation.
func initFromURL(t *table, cowork, qcow2 string, args, second, third []string) error {
	sum, err := image.FileSHA256(qcow2, nil)
	if err != nil {
		return err
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, qcow2) }))
	defer srv.Close()
	url := srv.URL + "/" + filepath.Base(qcow2)
	initCmd := func(args []string) *exec.Cmd {
		return exec.Command(cowork, append([]string{"init", "--image", url, "--image-sha256", sum}, args...)...)
	}
	first, err := timeInitTotal(t, initCmd(args), "`cowork init` of a cloud image", "the stand-in over HTTP, provisioned")
	if err != nil {
		return err
	}
	return goldenRows(t, cowork, first, initCmd(second), initCmd(third))
}

// seenPhase tells whether p, or a phase that p begins or is begun by, has
// been seen.
func seenPhase(seen map[string]bool, p string) bool {
	for q := range seen {
		if strings.HasPrefix(q, p) || strings.HasPrefix(p, q) {
			return true
		}
	}
	return false
}
