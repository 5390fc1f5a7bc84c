// Command cowork-hostd-kubevirt is the daemon of a cowork instance whose
// guest runs on a Kubernetes cluster through KubeVirt (`cowork init
// --backend kubevirt`): the same hostd as cowork-hostd, with the
// instance's VM on the cluster instead of this machine. `cowork start`
// launches it for such instances; `cowork delete` asks it to delete the
// instance's objects in the cluster. It is built from the kubevirt module
// (`make kubevirt`), so that Kubernetes' client libraries stay out of
// the other two binaries.
//
//	cowork-hostd-kubevirt run --name NAME       the daemon (cowork start runs it)
//	cowork-hostd-kubevirt delete --name NAME    delete the instance's VM, disk and seed in the cluster
//	cowork-hostd-kubevirt log --name NAME [--since RFC3339] [--follow]
//	                                            the audit log of the namespace's egress proxy, as JSON lines (cowork proxy reads it)
//	cowork-hostd-kubevirt egress --namespace NS --image IMAGE [--policy FILE] [--audit-size N] [--cluster-cidr CIDR ...] [--api-key-secret NAME] [--api-endpoint URL]
//	                                            print the namespace's egress proxy and NetworkPolicies, for kubectl apply -f -
//	cowork-hostd-kubevirt version               this build, as JSON
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/coworkhq/cowork/hostd"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/kubevirt"
)

func main() {
	os.Exit(Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr, connect))
}

// connector reaches the cluster of a kubeconfig context ("" is the
// current one); tests pass a fake cluster.
type connector func(kubeContext string) (kubevirt.Backend, error)

// connect reads the kubeconfig as kubectl does ($KUBECONFIG, else
// ~/.kube/config) and reaches the cluster of kubeContext.
func connect(kubeContext string) (kubevirt.Backend, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return kubevirt.Backend{}, fmt.Errorf("read the kubeconfig (context %q): %w; check `kubectl config get-contexts`", kubeContext, err)
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return kubevirt.Backend{}, err
	}
	return kubevirt.Backend{Client: client, Dial: kubevirt.SubresourceDialer(cfg), Forward: kubevirt.APIPortForwarder(cfg)}, nil
}

// Main runs one command line and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, reach connector) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return hostdwire.ExitUsage
	}
	var err error
	switch args[0] {
	case "run":
		return run(ctx, args[1:], stderr, reach)
	case "delete":
		err = deleteCmd(ctx, args[1:], reach)
	case "log":
		err = logCmd(ctx, args[1:], stdout, stderr, reach)
	case "egress":
		err = egressCmd(args[1:], stdout)
	case "version":
		err = versionCmd(args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "%s: unknown command %q; this binary is started by `cowork`, which must come from the same build\n%s\n", instance.KubeVirtHostd, args[0], usage)
		return hostdwire.ExitUsage
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", instance.KubeVirtHostd, err)
		if errors.As(err, new(usageError)) {
			return hostdwire.ExitUsage
		}
		return 1
	}
	return 0
}

const usage = `usage: cowork-hostd-kubevirt run --name NAME | delete --name NAME | version
       cowork-hostd-kubevirt log --name NAME [--since RFC3339] [--follow]
       cowork-hostd-kubevirt egress --namespace NS --image IMAGE [--policy FILE] [--audit-size BYTES] [--cluster-cidr CIDR ...] [--api-key-secret NAME] [--api-endpoint URL]
cowork-hostd-kubevirt is the daemon of a cowork instance on a Kubernetes cluster; ` + "`cowork start`" + ` runs it.`

// usageError is a command line the binary does not take.
type usageError struct{ error }

func parse(fs *flag.FlagSet, args []string) error {
	if err := hostdwire.Parse(fs, args); err != nil {
		return usageError{err}
	}
	return nil
}

// kubeInstance is the named instance's config, which must be a kubevirt
// one, and the cluster it runs on.
func kubeInstance(name string, reach connector) (*instance.Config, kubevirt.Backend, error) {
	cfg, err := instance.Load(name)
	if err != nil {
		return nil, kubevirt.Backend{}, err
	}
	if _, err := kubevirt.SpecFor(cfg); err != nil {
		return nil, kubevirt.Backend{}, err
	}
	b, err := reach(cfg.Cluster.Context)
	return cfg, b, err
}

// run is the daemon: hostd, with the instance's VM on the cluster.
func run(ctx context.Context, args []string, stderr io.Writer, reach connector) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	name := fs.String("name", instance.DefaultName, "the instance")
	if err := parse(fs, args); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", instance.KubeVirtHostd, err)
		return hostdwire.ExitUsage
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	log, _ := hostd.OpenLog(*name, stderr)
	err := func() error {
		cfg, b, err := kubeInstance(*name, reach)
		if err != nil {
			return err
		}
		newMachine, err := b.NewMachine(cfg)
		if err != nil {
			return err
		}
		return hostd.Run(ctx, hostd.Options{Name: *name, Log: log, NewMachine: newMachine})
	}()
	switch {
	case errors.Is(err, instance.ErrRunning):
		fmt.Fprintf(stderr, "%s: instance %s already has a hostd\n", instance.KubeVirtHostd, *name)
		return hostdwire.ExitAlreadyRunning
	case err != nil:
		log.Error("hostd ended", "err", err)
		fmt.Fprintf(stderr, "%s: %v\n", instance.KubeVirtHostd, err)
		return 1
	}
	return 0
}

// deleteCmd deletes the named instance's objects in the cluster.
func deleteCmd(ctx context.Context, args []string, reach connector) error {
	fs := flag.NewFlagSet("delete", flag.ContinueOnError)
	name := fs.String("name", "", "the instance")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *name == "" {
		return usageError{errors.New("delete: --name is required")}
	}
	cfg, b, err := kubeInstance(*name, reach)
	if err != nil {
		return err
	}
	return b.Delete(ctx, cfg)
}
