// Command ask shows cowork's Go API, the way a program drives a sandbox:
// it opens an instance, starts it if it is stopped, reads its status,
// runs a command in the guest, and asks Claude Code a question, printing
// the answer as it streams and each tool call as Claude makes it.
//
//	cowork init                      # once: an instance
//	export ANTHROPIC_API_KEY=...     # stays on this machine
//	go run ./examples/ask -project demo "write hello.py and run it"
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"unicode"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/claudecode"
)

func main() {
	instance := flag.String("instance", "sandbox", "the cowork instance to use")
	project := flag.String("project", "", "work in /workspace/`NAME`")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: ask [-instance NAME] [-project NAME] PROMPT")
		flag.PrintDefaults()
	}
	flag.Parse()
	prompt := strings.Join(flag.Args(), " ")
	if prompt == "" {
		flag.Usage()
		os.Exit(2)
	}
	code, err := run(*instance, *project, prompt)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ask:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(instance, project, prompt string) (int, error) {
	// Ctrl-C cancels the context: the agent then stops claude in the guest.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	inst, err := cowork.Open(instance) // its message says how to make one
	if err != nil {
		return 0, err
	}
	if !inst.Running() {
		err := inst.Start(ctx, func(e *cowork.Event) { fmt.Fprintf(os.Stderr, "  %s\n", e.Message) })
		if err != nil && !errors.Is(err, cowork.ErrAlreadyRunning) {
			return 0, fmt.Errorf("start: %w", err)
		}
	}

	st, err := inst.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("status: %w", err)
	}
	var kernel bytes.Buffer
	if _, err := inst.Exec(ctx, agentclient.ExecOptions{Argv: []string{"uname", "-sr"}, Stdout: &kernel}); err != nil {
		return 0, fmt.Errorf("exec: %w", err)
	}
	// What the guest says is printed inert: it may hold terminal escapes.
	fmt.Fprintf(os.Stderr, "%s is %s: %s, agent %s, guest %s\n",
		st.Name, st.State, printable(kernel.String()), printable(st.AgentVersion), st.GuestIP)

	cred, err := cowork.HostCredential(os.Getenv)
	if err != nil {
		return 0, err
	}
	// The key stays here: the guest gets a stand-in that the relay honours
	// only while Ask runs (it dies with this program, however it ends).
	exit, err := inst.Ask(ctx, cowork.AskOptions{
		ClaudeOptions: cowork.ClaudeOptions{
			Project:    project,
			Credential: cred,
			Env:        cowork.ForwardedEnv(os.Getenv),
			Stderr:     os.Stderr,
		},
		Prompt:  prompt,
		OnEvent: show,
	})
	if err != nil {
		return 0, fmt.Errorf("ask: %w", err)
	}
	return exit.Code, nil
}

// printable is s on one line without control characters.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, strings.TrimSpace(s))
}

// show prints one stream-json event: text as it streams, a line per tool
// call, and the outcome.
func show(e *claudecode.Event) {
	switch e.Type {
	case "stream_event":
		if e.Event != nil && e.Event.Delta != nil && e.Event.Delta.Type == "text_delta" {
			fmt.Print(e.Event.Delta.Text)
		}
	case "assistant":
		if e.Message == nil {
			return
		}
		for _, b := range e.Message.Content {
			if b.Type == "tool_use" {
				fmt.Printf("\n[%s %v]\n", b.Name, b.Input)
			}
		}
	case "result":
		fmt.Printf("\n[%d turns, $%.4f, session %s, error %v]\n", e.NumTurns, e.TotalCostUSD, e.SessionID, e.IsError)
	}
}
