package policycmd

import (
	"fmt"
	"strings"

	"github.com/coworkhq/cowork/internal/termsafe"
)

// diffContext is how many unchanged lines a hunk shows around a change.
const diffContext = 3

// maxDiffCells bounds the table the diff is found with: past it (two
// policies of a few thousand lines each), the diff is every old line
// removed and every new one added, still true, only longer.
const maxDiffCells = 4 << 20

type diffEdit struct {
	op   byte // ' ', '-' or '+'
	text string
}

// unifiedDiff is the unified diff (diff -u) of two policies' lines, ""
// when they are the same. color marks removed lines red, added green.
// Each line is printed through termsafe: an entry saved before control
// characters were refused, or a file's name, cannot act on the terminal.
func unifiedDiff(a, b []string, nameA, nameB string, color bool) string {
	es := edits(a, b)
	if !changed(es) {
		return ""
	}
	// pos[k] is how many lines of a, and of b, come before edit k.
	posA, posB := make([]int, len(es)+1), make([]int, len(es)+1)
	for k, e := range es {
		posA[k+1], posB[k+1] = posA[k], posB[k]
		if e.op != '+' {
			posA[k+1]++
		}
		if e.op != '-' {
			posB[k+1]++
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n", termsafe.Line(nameA), termsafe.Line(nameB))
	for i := 0; i < len(es); {
		for i < len(es) && es[i].op == ' ' {
			i++
		}
		if i == len(es) {
			break
		}
		last := i // the hunk's last change
		for k := i + 1; k < len(es); k++ {
			if es[k].op != ' ' {
				if k-last-1 > 2*diffContext {
					break
				}
				last = k
			}
		}
		start, stop := max(0, i-diffContext), min(len(es), last+1+diffContext)
		fmt.Fprintf(&out, "@@ -%s +%s @@\n", hunkRange(posA[start], posA[stop]-posA[start]), hunkRange(posB[start], posB[stop]-posB[start]))
		for _, e := range es[start:stop] {
			line := string(e.op) + termsafe.Line(e.text)
			switch {
			case color && e.op == '-':
				line = "\x1b[31m" + line + "\x1b[0m"
			case color && e.op == '+':
				line = "\x1b[32m" + line + "\x1b[0m"
			}
			out.WriteString(line + "\n")
		}
		i = stop
	}
	return out.String()
}

// hunkRange is a hunk's start,length as diff -u writes it.
func hunkRange(before, n int) string {
	if n == 0 {
		return fmt.Sprintf("%d,0", before)
	}
	if n == 1 {
		return fmt.Sprint(before + 1)
	}
	return fmt.Sprintf("%d,%d", before+1, n)
}

func changed(es []diffEdit) bool {
	for _, e := range es {
		if e.op != ' ' {
			return true
		}
	}
	return false
}

// edits turns a into b by a longest common subsequence of lines.
func edits(a, b []string) []diffEdit {
	n, m := len(a), len(b)
	var es []diffEdit
	if (n+1)*(m+1) > maxDiffCells {
		for _, l := range a {
			es = append(es, diffEdit{'-', l})
		}
		for _, l := range b {
			es = append(es, diffEdit{'+', l})
		}
		return es
	}
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case a[i] == b[j]:
			es = append(es, diffEdit{' ', a[i]})
			i, j = i+1, j+1
		case lcs[i+1][j] >= lcs[i][j+1]:
			es = append(es, diffEdit{'-', a[i]})
			i++
		default:
			es = append(es, diffEdit{'+', b[j]})
			j++
		}
	}
	for ; i < n; i++ {
		es = append(es, diffEdit{'-', a[i]})
	}
	for ; j < m; j++ {
		es = append(es, diffEdit{'+', b[j]})
	}
	return es
}
