package image

import (
	"strings"
	"testing"
)

// The agent runs as root in the guest; what it runs for the host runs as
// the guest's user unless the host names another. The unit says so: an
// agent started without --default-user would run every command as root.
func TestAgentUnitRunsCommandsAsTheGuestUser(t *testing.T) {
	g := testGuest()
	_, files := bootFiles(t, g)
	unit := files[unitDir+AgentUnit]
	var execStart string
	for _, line := range strings.Split(unit, "\n") {
		if strings.HasPrefix(line, "ExecStart=") {
			execStart = line
		}
	}
	args := strings.Fields(execStart)
	for i, a := range args {
		if a == "--default-user" && i+1 < len(args) && args[i+1] == g.User {
			return
		}
	}
	t.Fatalf("the agent is not told to run commands as %s by default: %q", g.User, execStart)
}
