// Package dashboardcmd is `cowork dashboard`: a live page of the
// instances, their traffic and their spend, on the host's loopback.
package dashboardcmd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/dashboard"
)

// Options is a parsed `cowork dashboard` command line.
type Options struct {
	IO    *iostreams.IOStreams
	Port  int
	Open  bool
	Since time.Duration
	// OpenURL opens the page in the user's browser (tests replace it).
	OpenURL func(url string) error
}

// NewCmdDashboard builds the command. runF, when not nil, gets the
// options instead of running them (tests).
func NewCmdDashboard(ios *iostreams.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios, OpenURL: openBrowser}
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Watch every instance's traffic and spend in a browser",
		Long: `Serve a live page on 127.0.0.1: the instances with their state and network
policy, every flow and DNS query of their guests with its verdict and rule
as it happens, and the API calls each task (a throwaway run, an ask or
claude session) made, charted over time. It reads the instances' audit
logs, as cowork proxy does; nothing it does slows the guests down.

The page's URL is printed on stdout with a token, 32 random bytes, which
every request must carry: keep it to yourself (--open puts it on the
command line of xdg-open, and of the browser if that was not running, where
other local users can read it). The server answers only on
127.0.0.1, only to a browser that names it 127.0.0.1 or localhost, and
only to its own page. Ctrl-C stops it.

Keys on the page: / filters, j and k (or the arrows) move through the
records, Enter shows the whole record, p pauses, ? lists the rest.`,
		Example: `  cowork dashboard --open
  cowork dashboard --port 8765 --since 1h`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Port < 0 || o.Port > 65535 {
				return cmdutil.FlagErrorf("--port %d: want a TCP port, 1 to 65535, or 0 for any free one", o.Port)
			}
			if o.Since < 0 {
				return cmdutil.FlagErrorf("--since %s: want how far back to read the logs, like 1h or 24h (0: all of them)", o.Since)
			}
			if runF != nil {
				return runF(o)
			}
			return Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Port, "port", 0, "port on 127.0.0.1 to serve on (0: any free one)")
	f.BoolVar(&o.Open, "open", false, "open the page in the browser")
	f.DurationVar(&o.Since, "since", 24*time.Hour, "read the logs from this long ago (0: all of them)")
	return cmd
}

// Run serves the dashboard until ctx ends or the user interrupts it.
func Run(ctx context.Context, o *Options) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := dashboard.Start(ctx, dashboard.Options{
		Addr:  fmt.Sprintf("127.0.0.1:%d", o.Port),
		Since: o.Since,
		Logf:  func(format string, args ...any) { fmt.Fprintf(o.IO.ErrOut, "cowork: "+format+"\n", args...) },
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	if _, err := fmt.Fprintln(o.IO.Out, srv.URL()); err != nil {
		return err
	}
	fmt.Fprintln(o.IO.ErrOut, "serving the dashboard on 127.0.0.1 until Ctrl-C; its URL's token is the key to it")
	if o.Open {
		if err := o.OpenURL(srv.URL()); err != nil {
			fmt.Fprintf(o.IO.ErrOut, "cowork: could not open a browser (%v); open the URL above yourself\n", err)
		}
	}
	<-ctx.Done()
	return nil
}

// openBrowser opens url with the desktop's opener, without waiting on it.
func openBrowser(url string) error {
	name := "xdg-open"
	if runtime.GOOS == "darwin" {
		name = "open"
	}
	c := exec.Command(name, url)
	if err := c.Start(); err != nil {
		return err
	}
	go c.Wait()
	return nil
}
