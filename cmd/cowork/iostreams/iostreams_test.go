package iostreams

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIsStdinNull(t *testing.T) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	file := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	empty, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	for _, c := range []struct {
		name string
		in   *os.File
		want bool
	}{
		{"/dev/null", null, true},
		{"a pipe", r, false},
		{"an empty file", empty, false}, // may grow: a writer can append to it
	} {
		if got := FromFiles(c.in, os.Stdout, os.Stderr).IsStdinNull(); got != c.want {
			t.Errorf("stdin %s: IsStdinNull = %v, want %v", c.name, got, c.want)
		}
	}
	if s, _, _, _ := Test(); s.IsStdinNull() {
		t.Error("a buffer is not the null device")
	}
}

func TestReadSecretFromStdin(t *testing.T) {
	s, in, _, _ := Test()
	in.WriteString("tok-en\r\n")
	if v, err := s.ReadSecret("x"); err != nil || v != "tok-en" {
		t.Fatalf("%q %v", v, err)
	}
	s, in, _, _ = Test()
	in.WriteString(strings.Repeat("a", maxSecret) + "\n")
	if v, err := s.ReadSecret("x"); err != nil || len(v) != maxSecret {
		t.Fatalf("a value of the most there may be: %d %v", len(v), err)
	}
	s, in, _, _ = Test()
	in.WriteString(strings.Repeat("a", maxSecret+1))
	if _, err := s.ReadSecret("x"); err == nil || !strings.Contains(err.Error(), "over 16 KiB") {
		t.Fatalf("an oversized value: %v", err)
	}
}
