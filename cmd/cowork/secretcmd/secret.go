// Package secretcmd is `cowork secret`: credentials the host holds for the
// guest, which sees only placeholders.
package secretcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

// Options is a parsed `cowork secret` command line.
type Options struct {
	IO   *iostreams.IOStreams
	Name string // the instance (global --name)

	Verb   string // set, ls, rm
	Secret string // set: the secret's name
	Names  []string
	Host   string
	Bearer bool
	Basic  bool
	Header string
	CAFile string
	JSON   bool
}

// NewCmdSecret builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdSecret(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	run := func(verb string) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			o.Name, o.Verb = *name, verb
			switch verb {
			case "set":
				o.Secret = args[0]
			case "rm":
				o.Names = args
			}
			if runF != nil {
				return runF(o)
			}
			return Run(cmd.Context(), o)
		}
	}
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Credentials the host holds for the guest, which sees only placeholders",
		Long: `A secret is a credential (a token, a password) this machine keeps for one
host: in the macOS Keychain, on Linux in the Secret Service when the session
has one, else in a file only you can read in the instance's folder (secret ls
says where). The guest gets a placeholder in the environment variable NAME of
every command; cowork's network replaces it with the value in requests to
HOST alone, over TLS it verifies for HOST, in the place the secret names:

  (default)       the Authorization header, any scheme (Bearer, Basic, token)
  --bearer        Authorization: Bearer $NAME only
  --basic         the password of Authorization: Basic only
  --header H      the header H only

git over HTTPS to HOST finds it by itself (a credential helper in the
environment); other tools take $NAME where they take a token. The value never
enters the guest, its files or the logs; the audit log names the secret used
by each request. The guest trusts the instance's own CA, which stands in for
HOST; a placeholder sent anywhere else stays a placeholder.`,
		Args: cmdutil.UnknownCommand,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	set := &cobra.Command{
		Use:   "set NAME [--host HOST [--bearer | --basic | --header H] [--ca FILE]]",
		Short: "Keep a secret's value (read from stdin) for HOST; without --host, a new value for NAME",
		Example: `  cowork secret set GH_TOKEN --host github.com < token.txt
  gh auth token | cowork secret set GH_TOKEN --host api.github.com --bearer
  cowork secret set GITLAB_TOKEN --host gitlab.example.com --header PRIVATE-TOKEN
  cowork secret set REG_TOKEN --host registry.internal:8443 --ca internal-ca.pem
  cowork secret set GH_TOKEN < new-token.txt   # a new value, the rest kept`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cmdutil.FlagErrorf("give one secret NAME: cowork secret set NAME --host HOST")
			}
			return nil
		},
		RunE: run("set"),
	}
	set.Flags().StringVar(&o.Host, "host", "", "the host the value may go to (`NAME[:PORT]`)")
	set.Flags().BoolVar(&o.Bearer, "bearer", false, "carried as Authorization: Bearer only")
	set.Flags().BoolVar(&o.Basic, "basic", false, "carried as the password of Authorization: Basic only")
	set.Flags().StringVar(&o.Header, "header", "", "carried in header `H` only")
	set.Flags().StringVar(&o.CAFile, "ca", "", "PEM `FILE` of a CA to trust for HOST besides this machine's")
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the secrets (never their values)",
		Example: "  cowork secret ls\n  cowork secret ls --json",
		Args:    cmdutil.NoArgs,
		RunE:    run("ls"),
	}
	ls.Flags().BoolVar(&o.JSON, "json", false, "print JSON")
	rm := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Forget secrets and their values",
		Example: "  cowork secret rm GH_TOKEN",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmdutil.FlagErrorf("give the NAME of the secret to remove: cowork secret rm NAME")
			}
			return nil
		},
		RunE: run("rm"),
	}
	cmd.AddCommand(set, ls, rm)
	return cmd
}

// Run carries out o.
func Run(ctx context.Context, o *Options) error {
	if ctx == nil {
		ctx = context.Background()
	}
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	if o.Verb == "set" || o.Verb == "rm" {
		if err := inst.LocalOnly(cowork.OpSecret); err != nil {
			return err // before the value is read
		}
	}
	switch o.Verb {
	case "set":
		return set(ctx, o, inst)
	case "rm":
		applied, err := inst.RemoveSecrets(ctx, o.Names...)
		if errors.Is(err, cowork.ErrNoSecret) {
			return &cmdutil.FlagError{Err: err}
		}
		if err != nil {
			return err
		}
		note := " (the running guest's placeholders for them stop working now)"
		if !applied {
			note = ""
		}
		fmt.Fprintf(o.IO.ErrOut, "removed %s%s\n", strings.Join(o.Names, ", "), note)
		return nil
	}
	return list(o, inst)
}

func set(ctx context.Context, o *Options, inst *cowork.Instance) error {
	secrets, err := inst.Secrets()
	if err != nil {
		return err
	}
	var spec cowork.SecretSpec
	modes := 0
	for _, on := range []bool{o.Bearer, o.Basic, o.Header != ""} {
		if on {
			modes++
		}
	}
	at := slices.IndexFunc(secrets, func(s cowork.Secret) bool { return s.Name == o.Secret })
	switch {
	case modes > 1:
		return cmdutil.FlagErrorf("give one of --bearer, --basic and --header")
	case o.Host == "" && (modes > 0 || o.CAFile != ""):
		return cmdutil.FlagErrorf("give the host with the rest: cowork secret set %s --host HOST ...", o.Secret)
	case o.Host == "" && at < 0:
		return cmdutil.FlagErrorf("give the host the secret may go to: cowork secret set %s --host HOST", o.Secret)
	case o.Host == "":
		// A new value for a secret kept as it is: its host, its place, its CA.
		old := secrets[at]
		spec = cowork.SecretSpec{Name: old.Name, Host: old.Host, Mode: old.Mode, Header: old.Header, CA: []byte(old.CA)}
	default:
		spec = cowork.SecretSpec{Name: o.Secret, Host: o.Host, Mode: cowork.SecretAuthorization}
		switch {
		case o.Bearer:
			spec.Mode = cowork.SecretBearer
		case o.Basic:
			spec.Mode = cowork.SecretBasic
		case o.Header != "":
			spec.Mode, spec.Header = cowork.SecretHeader, o.Header
		}
		if o.CAFile != "" {
			b, err := readBounded(o.CAFile)
			if err != nil {
				return cmdutil.FlagErrorf("--ca: %v", err)
			}
			spec.CA = b
		}
	}
	// Everything but the value is checked before the value is asked for.
	if spec, err = cowork.CheckSecretSpec(spec); err != nil {
		return &cmdutil.FlagError{Err: err}
	}
	value, err := o.IO.ReadSecret("Value of " + spec.Name + " (not shown): ")
	if err != nil {
		return fmt.Errorf("read the value: %w", err)
	}
	if value == "" {
		return cmdutil.FlagErrorf("no value: give it on stdin (cowork secret set %s < FILE) or type it at the prompt", spec.Name)
	}
	applied, err := inst.SetSecret(ctx, spec, value)
	var invalid *cowork.InvalidSecretError
	if errors.As(err, &invalid) {
		return &cmdutil.FlagError{Err: err}
	}
	if err != nil {
		return err
	}
	secrets, _ = inst.Secrets()
	for _, s := range secrets {
		if s.Name == spec.Name {
			when := "the guest gets $" + s.Name + " at its next start"
			if applied {
				when = "the running guest has $" + s.Name + " now"
			}
			fmt.Fprintf(o.IO.ErrOut, "set %s for %s (stored in %s); %s\n", s.Name, hostName(s.Host), storeName(s.Store), when)
		}
	}
	return nil
}

// readBounded reads a small file (a CA's certificates).
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10+1))
	if err == nil && len(b) > 64<<10 {
		err = fmt.Errorf("%s is over 64 KiB: give the CA's certificates alone", path)
	}
	return b, err
}

// hostName is a host key as a person writes it: without :443.
func hostName(key string) string { return strings.TrimSuffix(key, ":443") }

func storeName(s string) string {
	switch s {
	case "file":
		return "secrets.json, mode 0600, in the instance's folder"
	case "keychain":
		return "the macOS Keychain"
	case "secret-service":
		return "the Secret Service (the desktop keyring)"
	}
	return s
}

// listed is a secret as `secret ls --json` prints it.
type listed struct {
	Name        string    `json:"name"`
	Host        string    `json:"host"`
	Mode        string    `json:"mode"`
	Header      string    `json:"header,omitempty"`
	Placeholder string    `json:"placeholder"`
	Store       string    `json:"store"`
	CA          bool      `json:"ca"`
	Set         time.Time `json:"set"`
}

func list(o *Options, inst *cowork.Instance) error {
	secrets, err := inst.Secrets()
	if err != nil {
		return err
	}
	out := []listed{}
	for _, s := range secrets {
		out = append(out, listed{Name: s.Name, Host: hostName(s.Host), Mode: s.Mode, Header: s.Header, Placeholder: s.Placeholder, Store: s.Store, CA: s.CA != "", Set: s.Set})
	}
	if o.JSON {
		return cmdutil.PrintJSON(o.IO.Out, out)
	}
	if len(out) == 0 {
		fmt.Fprintf(o.IO.ErrOut, "%s has no secrets; set one with `cowork secret set NAME --host HOST`\n", inst.Name)
		return nil
	}
	w := tabwriter.NewWriter(o.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tHOST\tCARRIED IN\tSTORED IN\tSET")
	for _, s := range out {
		carried := map[string]string{"authorization": "Authorization", "bearer": "Authorization: Bearer", "basic": "Authorization: Basic", "header": s.Header}[s.Mode]
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Host, carried, s.Store, s.Set.Local().Format("2006-01-02 15:04"))
	}
	return w.Flush()
}
