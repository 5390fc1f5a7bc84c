package agentrpc

import (
	"context"
	"os"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// CallForTest makes a call of any method that answers one line.
func CallForTest(ctx context.Context, d agentclient.Dialer, method string) error {
	c, _ := New(d)
	_, err := c.once(ctx, agentcall.Request{Method: agentcall.Method(method)})
	return err
}

// errDeadlineForTest is what a connection's deadline passing wraps.
var errDeadlineForTest = os.ErrDeadlineExceeded
