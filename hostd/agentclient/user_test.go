package agentclient_test

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
)

// A process run as a user has that user's identity whole: uid, primary
// group and supplementary groups, none of the root agent's (group 0 would
// open every root-group file to it). The agent is given supplementary
// groups of its own here, as a root shell would give it, so that any it
// passed on would show.
func TestRunsWithTheUsersGroupsOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	old, err := syscall.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setgroups([]int{0, 4242}); err != nil {
		t.Fatal(err)
	}
	var a *agenttest.Agent
	func() {
		defer syscall.Setgroups(old)
		a = agenttest.Start(t) // inherits the groups
	}()
	for _, user := range []string{"nobody", "65534"} {
		_, out, _ := run(t, a.Client(t), agentclient.ExecOptions{Argv: []string{"sh", "-c", "id -u; id -g; id -G"}, User: user, Dir: "/"})
		if got := strings.Fields(out); strings.Join(got, " ") != "65534 65534 65534" {
			t.Errorf("as %s: uid, gid and groups %q, want nobody's (65534 65534 65534)", user, out)
		}
	}
}
