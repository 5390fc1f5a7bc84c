package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/tools/machosig/internal/sigtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	sigtest.Cleanup()
	os.Exit(code)
}

func TestRunExitCodes(t *testing.T) {
	signed := sigtest.Sign(t, sigtest.Entitlements())
	linkerOnly, _, _ := sigtest.Binaries(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"signed", []string{signed}, 0, "com.apple.security.virtualization=true", ""},
		{"other entitlement required", []string{"-entitlement", "com.apple.security.network.server", signed}, 1, "FAIL", ""},
		{"no entitlements", []string{linkerOnly}, 1, "no XML entitlements blob", ""},
		{"one bad of two", []string{signed, linkerOnly}, 1, "  OK", ""},
		{"missing file", []string{"/nonexistent"}, 1, "", "no such file"},
		{"not mach-o", []string{"main.go"}, 1, "", "parse Mach-O"},
		{"no args", nil, 2, "", "usage:"},
		{"bad flag", []string{"-x"}, 2, "", "usage:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, &stdout, &stderr)
			}
			if !strings.Contains(stdout.String(), tt.stdout) || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stdout %q / stderr %q, want %q / %q", &stdout, &stderr, tt.stdout, tt.stderr)
			}
		})
	}
}
