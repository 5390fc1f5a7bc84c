package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/coworkhq/cowork/hostd/egresspolicy"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/kubevirt"
	"github.com/coworkhq/cowork/units"
)

// cidrs is a repeatable flag.
type cidrs []string

func (c *cidrs) String() string     { return strings.Join(*c, ",") }
func (c *cidrs) Set(s string) error { *c = append(*c, s); return nil }

// egressCmd prints the namespace's egress proxy and its NetworkPolicies
// as YAML documents, in the order to apply them: a namespace gets them
// once, before its first sandbox (`... | kubectl apply -f -`).
func egressCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("egress", flag.ContinueOnError)
	ns := fs.String("namespace", "", "the namespace of the sandboxes")
	img := fs.String("image", "", "a container image with cowork-hostd of this build on its PATH")
	policyFile := fs.String("policy", "", "the sandboxes' network policy, as JSON (none: the default mode)")
	auditSize := fs.String("audit-size", "1GiB", "the audit log's volume")
	endpoint := fs.String("api-endpoint", "", "the https endpoint the relay sends the key to (default: Anthropic's API); sessions naming another are refused")
	keySecret := fs.String("api-key-secret", kubevirt.DefaultAPIKeySecret, "the Secret whose api-key the relay uses (kubectl create secret generic NAME --from-literal=api-key=...)")
	var ranges cidrs
	fs.Var(&ranges, "cluster-cidr", "a range of the cluster's own (pods, services, nodes); repeat it")
	if err := parse(fs, args); err != nil {
		return err
	}
	size, err := units.ParseSize(*auditSize)
	if err != nil {
		return usageError{fmt.Errorf("egress: --audit-size: %w", err)}
	}
	p, err := egresspolicy.Read(*policyFile)
	if errors.As(err, new(egresspolicy.InvalidError)) {
		return usageError{fmt.Errorf("egress: %w", err)}
	}
	if err != nil {
		return err
	}
	objs, err := kubevirt.Egress(kubevirt.EgressSpec{Namespace: *ns, Image: *img, Policy: p, AuditSize: int64(size), ClusterCIDRs: ranges, APIKeySecret: *keySecret, APIEndpoint: *endpoint})
	if err != nil {
		return usageError{fmt.Errorf("egress: %w", err)}
	}
	for _, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(stdout, "---\n%s", b); err != nil {
			return err
		}
	}
	return nil
}

// versionCmd prints this build.
func versionCmd(args []string, stdout io.Writer) error {
	if err := parse(flag.NewFlagSet("version", flag.ContinueOnError), args); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(hostdwire.This(nil))
}
