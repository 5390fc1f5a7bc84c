package cmdutil

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/instance"
)

// AgentEnv names the environment variable that points the CLI at an agent
// directly, like DOCKER_HOST does for docker.
const AgentEnv = "COWORK_AGENT"

// AgentTarget says which agent a command talks to: an explicit address
// (--agent, then $COWORK_AGENT), or else the named instance's relay socket.
type AgentTarget struct {
	Address  string    // --agent; empty when not given
	Instance string    // --name
	ErrOut   io.Writer // warnings; nil discards them
}

// Connect opens a client to the target agent.
func (t *AgentTarget) Connect() (*agentclient.Client, error) {
	addr := t.Address
	if addr == "" {
		addr = os.Getenv(AgentEnv)
	}
	if addr == "" {
		inst, err := cowork.Open(t.Instance)
		if err != nil {
			return nil, err
		}
		c, err := inst.Agent()
		if err == nil && t.ErrOut != nil {
			WarnMissingWorkspace(t.ErrOut, inst)
		}
		return c, err
	}
	d, err := agentclient.ParseAddress(addr)
	if err != nil {
		return nil, &FlagError{Err: err}
	}
	return agentclient.New(d)
}

// WarnMissingWorkspace warns when the instance's workspace folder is gone
// from this machine: the guest still runs, but its /workspace is a share of
// a deleted folder, empty and going nowhere.
func WarnMissingWorkspace(w io.Writer, inst *cowork.Instance) {
	if msg := WorkspaceGone(inst.Config, inst.Name); msg != "" {
		fmt.Fprintln(w, "cowork: warning:", msg)
	}
}

// WorkspaceGone is MissingWorkspace for a config already loaded; a
// guest on a cluster shares nothing of this machine, so it has none.
func WorkspaceGone(cfg *instance.Config, name string) string {
	if cfg.Remote() {
		return ""
	}
	if _, err := os.Stat(cfg.Workspace); !errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	return fmt.Sprintf("the workspace %s was removed from this machine, so the guest's /workspace shares nothing; recreate the folder, then `cowork stop%s && cowork start%s`",
		cfg.Workspace, instance.NameFlag(name), instance.NameFlag(name))
}
