package kubevirt

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/coworkhq/cowork/hostd/egresslog"
	"github.com/coworkhq/cowork/hostd/instance"
)

// EgressLog reads the audit log of namespace ns's egress proxy, from the
// log port on its pod's loopback (LogPort), through the API server's
// pods/portforward of the pod that runs and is ready, as the relay's
// sessions are opened: the caller's RBAC decides who may read it (`list`
// on pods, `create` on pods/portforward), and no guest can. Each
// record's JSON line goes to each, until the pod ends the stream (at the
// log's end, unless req follows it), stops answering (egresslog.Read's
// minute without a line, heartbeats included) or ctx ends; it returns
// how many damaged lines the pod left out. The log is the namespace's: every
// sandbox's traffic, each record naming its client's address.
//
// Each error is one line that says what to do: no egress pod, RBAC that
// refuses, or a pod whose image predates the log port.
func (b Backend) EgressLog(ctx context.Context, ns string, req egresslog.Request, each func(record []byte) error) (skipped int, err error) {
	if b.Forward == nil {
		return 0, errors.New("this binary cannot reach the cluster's pods (no port-forward)")
	}
	rbac := func(err error) error {
		return fmt.Errorf("%v; reading the egress proxy's log needs `list` on pods and `create` on pods/portforward in namespace %s: ask the cluster's admin for them", err, ns)
	}
	pod, err := (&relay{b: b, ns: ns}).egressPod(ctx)
	if apierrors.IsForbidden(err) {
		return 0, rbac(err)
	}
	if err != nil {
		return 0, err
	}
	where := fmt.Sprintf("the egress proxy's log port (%d of pod %s/%s, port-forward)", LogPort, ns, pod)
	c, err := b.Forward(ctx, ns, pod, LogPort)
	if apierrors.IsForbidden(err) {
		return 0, rbac(fmt.Errorf("%s: %w", where, err))
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", where, err)
	}
	defer c.Close()
	// A port-forward's stream has no deadlines: closing it ends a read.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	skipped, err = egresslog.Read(c, req, each)
	var (
		none    *egresslog.NoAnswerError
		refused *egresslog.RefusedError
	)
	switch {
	case err == nil:
		return skipped, nil
	case ctx.Err() != nil:
		return skipped, context.Cause(ctx)
	case errors.As(err, &none):
		return skipped, fmt.Errorf("%s answered nothing (%v): the pod's image is older than this cowork, or its log port is not on; deploy this build's: `%s egress --namespace %s --image IMAGE | kubectl apply -f -`",
			where, none.Err, instance.KubeVirtHostd, ns)
	case errors.As(err, &refused):
		return skipped, fmt.Errorf("%s: %s", where, refused.Msg)
	}
	return skipped, fmt.Errorf("%s: %w; the pod's log is `kubectl -n %s logs %s`", where, err, ns, pod)
}
