// Package egresspolicy reads the network policy of an egress proxy with
// no VM behind it (`cowork-hostd egress`, and the ConfigMap
// cowork-hostd-kubevirt writes for one): an instance's policy as JSON,
// less what has no meaning there.
package egresspolicy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// MaxFile bounds a policy file.
const MaxFile = 1 << 20

// InvalidError is a policy file that was read but is no egress policy:
// the command line's fault, not the machine's.
type InvalidError struct{ error }

func (e InvalidError) Unwrap() error { return e.error }

// Read reads the policy file at path: the default policy when path is
// empty. What has no meaning without a VM (host ports, a budget: there
// is no relay) is refused, not ignored.
func Read(path string) (policy.Policy, error) {
	var p policy.Policy
	if path == "" {
		return p, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return p, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFile+1))
	if err != nil {
		return p, err
	}
	if len(b) > MaxFile {
		return p, InvalidError{fmt.Errorf("%s is over %d bytes; a policy is a short JSON object", path, MaxFile)}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, InvalidError{fmt.Errorf("%s: %w; want {\"mode\": \"default\"|\"allowlist\", \"allow\": [...], \"deny\": [...]}", path, err)}
	}
	switch {
	case len(p.HostPorts) > 0:
		return p, InvalidError{fmt.Errorf("%s has host_ports: the egress proxy reaches nothing of its own machine; remove them", path)}
	case p.Budget != nil:
		return p, InvalidError{fmt.Errorf("%s has a budget: the egress proxy has no relay to spend it; remove it", path)}
	}
	if _, err := policy.Compile(p, netip.MustParseAddr(netstack.HostIP), []netip.Prefix{}); err != nil {
		return p, InvalidError{fmt.Errorf("%s: %w", path, err)}
	}
	return p, nil
}
