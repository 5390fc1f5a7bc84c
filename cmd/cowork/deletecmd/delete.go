// Package deletecmd is `cowork delete`.
package deletecmd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/stop"
	"github.com/coworkhq/cowork/hostd/instance"
)

// Options is a parsed `cowork delete` command line.
type Options struct {
	IO   *iostreams.IOStreams
	Name string
	// Yes skips the question; Force skips it too, and cuts the power.
	Yes, Force bool
}

// NewCmdDelete builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdDelete(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Delete the sandbox VM",
		Long: `Stop the instance and remove it: its disk, settings and logs. The workspace
folder on the host is kept. Asks first on a terminal; --yes skips the question,
--force also cuts the power instead of shutting down.`,
		Example: "  cowork delete\n  cowork delete --yes\n  cowork delete --name scratch --force",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if runF != nil {
				return runF(o)
			}
			return run(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVarP(&o.Yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVarP(&o.Force, "force", "f", false, "do not ask, and cut the power instead of shutting down")
	return cmd
}

func run(ctx context.Context, o *Options) error {
	cfg, err := instance.Load(o.Name)
	if err != nil {
		return err
	}
	paths, err := instance.PathsFor(o.Name)
	if err != nil {
		return err
	}
	// The workspace is never deleted, even where it should not be.
	if within(cfg.Workspace, paths.Dir()) {
		return fmt.Errorf("instance %s's workspace %s is inside its directory %s, which delete removes; nothing was deleted: move the workspace out first", o.Name, cfg.Workspace, paths.Dir())
	}
	if !o.Yes && !o.Force {
		q := fmt.Sprintf("Delete instance %s and its disk (%s)? The workspace %s is kept.", o.Name, paths.Dir(), cfg.Workspace)
		yes, err := cmdutil.Confirm(o.IO, "cowork delete", q, "--yes")
		if err != nil {
			return err
		}
		if !yes {
			fmt.Fprintln(o.IO.ErrOut, "not deleted")
			return &cmdutil.ExitError{Code: 1}
		}
	}
	if err := stop.Stop(ctx, o.IO, o.Name, o.Force, 30*time.Second); err != nil {
		return err
	}
	if err := remove(paths); err != nil {
		return fmt.Errorf("remove %s: %w; run `cowork delete%s` again", paths.Dir(), err, instance.NameFlag(o.Name))
	}
	fmt.Fprintf(o.IO.ErrOut, "deleted %s\n", o.Name)
	return nil
}

// remove removes the instance's directory, its config last: a delete cut
// short leaves an instance that delete still knows, never a folder
// without a config, which init refuses to reuse (instance.CheckLeftover).
func remove(paths instance.Paths) error {
	entries, err := os.ReadDir(paths.Dir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if f := filepath.Join(paths.Dir(), e.Name()); f != paths.Config() {
			if err := os.RemoveAll(f); err != nil {
				return err
			}
		}
	}
	return os.RemoveAll(paths.Dir())
}

// within reports whether path is dir or lies under it, symbolic links
// resolved where they exist.
func within(path, dir string) bool {
	resolve := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return filepath.Clean(p)
	}
	rel, err := filepath.Rel(resolve(dir), resolve(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
