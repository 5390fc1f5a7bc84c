package guestrun

import (
	"context"
	"testing"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/agentclient"
)

// hostd refusing the API session is a fault on the host, before anything
// ran in the guest: it is not reported as the guest's.
func TestAHostErrorIsNotTheGuests(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	refused := &cowork.SessionError{Msg: "the API endpoint http://127.0.0.1:9 cannot be reached"}
	err := Attach(context.Background(), ios, false, &agentclient.ExecOptions{}, func(context.Context) (agentclient.ExitStatus, error) {
		return agentclient.ExitStatus{}, refused
	})
	if err != refused {
		t.Errorf("Attach: %v, want hostd's refusal as it is", err)
	}
}
