//go:build linux

package main

import (
	"fmt"
	"strings"
	"time"
)

// table is the one table `make bench` prints, section by section.
type table struct{ rows []row }

type row struct {
	section      string // set on a section's first row only
	name         string
	ours, peer   string
	ratio        float64 // 0: no ratio
	target       string
	met, hasGoal bool
}

func (t *table) section(name string) { t.rows = append(t.rows, row{section: name}) }

// add records a measure; target "" means no goal, only a figure.
func (t *table) add(name, ours, peer string, ratio float64, target string, met bool) {
	t.rows = append(t.rows, row{name: name, ours: ours, peer: peer, ratio: ratio, target: target, met: met, hasGoal: target != ""})
}

func (t *table) print() {
	fmt.Println("| measure | cowork | peer | ratio | target |")
	fmt.Println("| --- | --- | --- | --- | --- |")
	for _, r := range t.rows {
		if r.section != "" {
			fmt.Printf("| **%s** | | | | |\n", r.section)
			continue
		}
		ratio := ""
		if r.ratio != 0 {
			ratio = fmt.Sprintf("%.2f×", r.ratio)
		}
		target := r.target
		if r.hasGoal {
			if r.met {
				target += " met"
			} else {
				target += " MISSED"
			}
		}
		fmt.Printf("| %s | %s | %s | %s | %s |\n", r.name, r.ours, r.peer, ratio, strings.TrimSpace(target))
	}
}

// lat formats latency samples as p50 (p99).
func lat(s samples) string { return ms(s.p50()) + " (p99 " + ms(s.p99()) + ")" }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
