package agentclient_test

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/coworkhq/cowork/guestagent/agentpb"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
	"github.com/coworkhq/cowork/internal/buildinfo"
)

// stillServes fails the test unless the agent runs a command correctly.
func stillServes(t *testing.T, a *agenttest.Agent) {
	t.Helper()
	st, out, _ := run(t, a.Client(t), agentclient.ExecOptions{Argv: []string{"echo", "ok"}})
	if st.Code != 0 || out != "ok\n" || !a.Alive() {
		t.Fatalf("agent no longer serves: %+v %q alive=%v\n%s", st, out, a.Alive(), a.Log())
	}
}

func TestBadStartsAreClearErrors(t *testing.T) {
	a := agenttest.Start(t)
	c := a.Client(t)
	file := t.TempDir() + "/plain"
	os.WriteFile(file, []byte("x"), 0o644)
	tests := []struct {
		name string
		o    agentclient.ExecOptions
		code codes.Code
		msg  string
	}{
		{"unknown user", agentclient.ExecOptions{Argv: []string{"true"}, User: "no-such-user"}, codes.InvalidArgument, `unknown user "no-such-user"`},
		{"missing cwd", agentclient.ExecOptions{Argv: []string{"true"}, Dir: "/no/such/dir"}, codes.InvalidArgument, "working directory /no/such/dir does not exist"},
		{"cwd is a file", agentclient.ExecOptions{Argv: []string{"true"}, Dir: file}, codes.InvalidArgument, "is not a directory"},
		{"relative cwd", agentclient.ExecOptions{Argv: []string{"true"}, Dir: "tmp"}, codes.InvalidArgument, "not an absolute path"},
		{"missing binary", agentclient.ExecOptions{Argv: []string{"no-such-binary"}}, codes.NotFound, `executable "no-such-binary" not found in PATH`},
		{"missing path", agentclient.ExecOptions{Argv: []string{"/no/such/binary"}}, codes.NotFound, "/no/such/binary: no such file"},
		{"not executable", agentclient.ExecOptions{Argv: []string{file}}, codes.NotFound, "not executable"},
		{"empty argv", agentclient.ExecOptions{}, codes.InvalidArgument, "empty argv"},
		{"bad env", agentclient.ExecOptions{Argv: []string{"true"}, Env: []string{"NOEQUALS"}}, codes.InvalidArgument, `"NOEQUALS" is not KEY=VALUE`},
	}
	for _, tt := range tests {
		_, err := c.Exec(context.Background(), tt.o)
		if status.Code(err) != tt.code || !strings.Contains(agentclient.Message(err), tt.msg) {
			t.Errorf("%s: got %v, want %v %q", tt.name, err, tt.code, tt.msg)
		}
	}
	stillServes(t, a)
}

func rawClient(t *testing.T, a *agenttest.Agent) agentpb.AgentClient {
	conn, err := grpc.NewClient("unix://"+a.Socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentpb.NewAgentClient(conn)
}

func TestOversizedMessageEndsOnlyThatStream(t *testing.T) {
	a := agenttest.Start(t)
	api := rawClient(t, a)
	for _, req := range []*agentpb.ExecRequest{
		{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Argv: []string{"echo", strings.Repeat("x", 2<<20)}}}},
		{Msg: &agentpb.ExecRequest_Stdin{Stdin: make([]byte, 2<<20)}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		stream, err := api.Exec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := req.Msg.(*agentpb.ExecRequest_Stdin); ok {
			stream.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Argv: []string{"cat"}}}})
		}
		stream.Send(req)
		for err == nil {
			_, err = stream.Recv()
		}
		cancel()
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("oversized %T: got %v, want ResourceExhausted", req.Msg, err)
		}
	}
	stillServes(t, a)
}

func TestMessagesOutOfOrderAreRefused(t *testing.T) {
	a := agenttest.Start(t)
	stream, err := rawClient(t, a).Exec(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Stdin{Stdin: []byte("hi")}})
	_, err = stream.Recv()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "must begin with start") {
		t.Fatalf("got %v", err)
	}
	stillServes(t, a)
}

func TestGarbageConnectionIsClosed(t *testing.T) {
	a := agenttest.Start(t)
	for _, garbage := range [][]byte{
		randomBytes(64 << 10),
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), randomBytes(4096)...), // a valid preface, then noise
	} {
		c, err := net.Dial("unix", a.Socket)
		if err != nil {
			t.Fatal(err)
		}
		go c.Write(garbage)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("the agent kept a connection that sent garbage (%q...) open", garbage[:8])
		}
		c.Close()
	}
	stillServes(t, a)
}

func TestInfo(t *testing.T) {
	marker := t.TempDir() + "/provisioned"
	a := agenttest.Start(t, "--provisioned-marker", marker)
	c := a.Client(t)
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	host, _ := os.Hostname()
	if info.Version != buildinfo.Version || info.BootId != strings.TrimSpace(string(bootID)) || info.Hostname != host ||
		info.Kernel == "" || info.UptimeMs <= 0 || info.Arch == "" || info.Provisioned {
		t.Fatalf("info %+v", info)
	}
	os.WriteFile(marker, nil, 0o644)
	if info, _ := c.Info(context.Background()); !info.Provisioned {
		t.Fatal("provisioned marker exists but Info says not provisioned")
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// An agent that dies mid-command ends the command at once, with a cause.
func TestAgentDyingMidCommand(t *testing.T) {
	a := agenttest.Start(t)
	started := make(chan int, 1)
	done := make(chan error, 1)
	began := time.Now()
	go func() {
		_, err := a.Client(t).Exec(context.Background(), agentclient.ExecOptions{Argv: []string{"sleep", "20"}, Started: func(pid int) { started <- pid }})
		done <- err
	}()
	<-started
	a.Cmd.Process.Kill()
	select {
	case err := <-done:
		var lost *agentclient.LostError
		if !errors.As(err, &lost) || !strings.Contains(err.Error(), "lost the connection to the guest agent") {
			t.Fatalf("got %v", err)
		}
		if d := time.Since(began); d > 5*time.Second {
			t.Fatalf("noticed after %v", d)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the exec outlived its agent")
	}
}
