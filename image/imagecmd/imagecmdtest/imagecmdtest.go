// Package imagecmdtest lets a test binary stand in for cowork-hostd's
// image commands, so the tests of what runs them (cowork.Create, init)
// need no daemon build:
//
//	func TestMain(m *testing.M) {
//		imagecmdtest.Main()
//		os.Exit(imagecmdtest.Run(m))
//	}
package imagecmdtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/coworkhq/cowork/image/imagecmd"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

// env marks a copy of the test binary started as cowork-hostd.
const env = "COWORK_TEST_AS_HOSTD"

// Main runs the image command the test binary was started with when it
// runs as Install's stand-in, and exits; otherwise it returns.
func Main() {
	if os.Getenv(env) != "1" {
		return
	}
	if len(os.Args) < 2 {
		os.Exit(hostdwire.ExitUsage)
	}
	err := imagecmd.Run(context.Background(), os.Args[1], os.Args[2:], os.Stdout)
	if err == nil {
		os.Exit(0)
	}
	fmt.Fprintln(os.Stderr, hostdwire.Binary+":", err)
	if errors.As(err, new(*imagecmd.UsageError)) {
		os.Exit(hostdwire.ExitUsage)
	}
	os.Exit(1)
}

// Run runs the package's tests with a copy of the test binary as the
// daemon binary (a copy, since cowork refuses to run itself as its
// daemon); a test may still point $COWORK_HOSTD elsewhere.
func Run(m *testing.M) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "imagecmdtest")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	stand := filepath.Join(dir, hostdwire.Binary)
	b, err := os.ReadFile(self)
	if err == nil {
		err = os.WriteFile(stand, b, 0o700)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv(hostdwire.Env, stand)
	os.Setenv(env, "1")
	defer os.Unsetenv(env)
	return m.Run()
}
