//go:build linux

package main

import (
	"slices"
	"testing"
	"time"
)

func TestInterleaveAlternatesTheOrder(t *testing.T) {
	var ran []string
	contender := func(name string, d time.Duration) func() (time.Duration, error) {
		return func() (time.Duration, error) { ran = append(ran, name); return d, nil }
	}
	out, err := interleave(3, []func() (time.Duration, error){contender("A", 1), contender("B", 2), contender("C", 3)})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"A", "B", "C", "C", "B", "A", "A", "B", "C"}; !slices.Equal(ran, want) {
		t.Errorf("ran %v, want %v", ran, want)
	}
	for i, s := range out {
		if len(s) != 3 || s[0] != time.Duration(i+1) || s[2] != time.Duration(i+1) {
			t.Errorf("contender %d got samples %v, want its own three", i, s)
		}
	}
}
