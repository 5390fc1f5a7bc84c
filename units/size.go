// Package units parses and prints byte sizes the way people type them.
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is a number of bytes.
type Size int64

const (
	KiB Size = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

var suffixes = []struct {
	s string
	m Size
}{
	{"tib", TiB}, {"gib", GiB}, {"mib", MiB}, {"kib", KiB},
	{"tb", TiB}, {"gb", GiB}, {"mb", MiB}, {"kb", KiB},
	{"t", TiB}, {"g", GiB}, {"m", MiB}, {"k", KiB},
	{"b", 1},
}

// ParseSize reads "4GiB", "4G", "512MiB", "1.5GiB" or a plain number of
// bytes. K, M, G and T are binary (1024-based), as in docker and lima.
func ParseSize(s string) (Size, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := Size(1)
	for _, suf := range suffixes {
		if strings.HasSuffix(t, suf.s) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, suf.s)), suf.m
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("size %q: want a number with a unit, like 4GiB or 512MiB", s)
	}
	b := v * float64(mult)
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(b), nil
}

// String prints the size in the largest binary unit that keeps it readable.
func (s Size) String() string {
	for _, u := range []struct {
		name string
		m    Size
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s >= u.m {
			v := float64(s) / float64(u.m)
			if v == math.Trunc(v) {
				return fmt.Sprintf("%.0f %s", v, u.name)
			}
			return fmt.Sprintf("%.1f %s", v, u.name)
		}
	}
	return fmt.Sprintf("%d B", int64(s))
}
