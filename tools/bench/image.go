//go:build linux

package main

import (
	"crypto/rand"
	"fmt"
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
	began := time.Now()
	out, err := exec.Command(cowork, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cowork init: %v\n%s", err, out)
	}
	total := time.Since(began)
	// init prints "convert ... done (1.5s)" and "[  8.4s] guest kernel
	// booting": the phase in the first column, its time in the second.
	phase := regexp.MustCompile(`^\[\s*([0-9.]+)s\] ([^(;]*)`)
	convert := regexp.MustCompile(`^convert.*done \(([^)]+)\)`) // "1.5s", "900ms"
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if m := convert.FindStringSubmatch(line); m != nil {
			if d, err := time.ParseDuration(m[1]); err == nil {
				t.add("`cowork init` → image converted", secs(d), "", 0, "", false)
			}
		}
		if m := phase.FindStringSubmatch(line); m != nil {
			t.add("`cowork init` → "+strings.TrimSpace(m[2]), m[1]+" s", "", 0, "", false)
		}
	}
	t.add("`cowork init` total (e2e guest, raw disk)", secs(total), "", 0, "", false)
	return nil
}
