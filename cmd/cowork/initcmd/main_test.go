package initcmd

import (
	"os"
	"testing"

	"github.com/coworkhq/cowork/image/imagecmd/imagecmdtest"
)

// TestMain lets init's downloads, digests and disks run as they do for a
// user, in a daemon binary: this test binary, copied, stands in for it.
func TestMain(m *testing.M) {
	imagecmdtest.Main()
	os.Exit(imagecmdtest.Run(m))
}
