package kubevirt

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"k8s.io/client-go/rest"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/root"
	"github.com/coworkhq/cowork/internal/syncbuf"
)

// shell and cp take exec's path to a guest on the cluster (hostd's agent
// socket, the vsock subresource): here they run as the CLI runs them,
// against the daemon with the fake API server and a real agent, the
// shell on a pseudo-terminal as a person's would be.
func TestShellAndCpReachAGuestOnTheCluster(t *testing.T) {
	cfg := kubeInstance(t, "box", "sandboxes")
	writeConfig(t, cfg)
	t.Setenv("COWORK_AGENT", "")
	c := newCluster(t, "sandboxes", deployedEgress(t, "sandboxes", ours)...)
	vs := provisionedGuest(t, "")
	b := Backend{Client: c.client, Dial: SubresourceDialer(&rest.Config{Host: vs.URL}), Poll: 5 * time.Millisecond}
	newMachine, err := b.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	startHostd(ctx, t, newMachine)

	// cp in and out (the test's guest shares this machine's files).
	dir := t.TempDir()
	src := filepath.Join(dir, "note.txt")
	os.WriteFile(src, []byte("through the subresource\n"), 0o600)
	ios, _, _, errOut := iostreams.Test()
	if code := root.Main(ctx, ios, []string{"--name", "box", "cp", src, "box:" + filepath.Join(dir, "in-guest.txt")}); code != 0 {
		t.Fatalf("cp in: exit %d: %s", code, errOut)
	}
	ios, _, out, errOut := iostreams.Test()
	if code := root.Main(ctx, ios, []string{"--name", "box", "cp", "box:" + filepath.Join(dir, "in-guest.txt"), "-"}); code != 0 || !strings.Contains(out.String(), "through the subresource") {
		t.Fatalf("cp out: exit %d, stdout %q: %s", code, out, errOut)
	}

	// shell, on a terminal: the guest's end is a terminal too.
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	exit := make(chan int, 1)
	go func() {
		exit <- root.Main(ctx, iostreams.FromFiles(tty, tty, tty), []string{"--name", "box", "shell", "-w", dir})
	}()
	ptmx.WriteString("test -t 0 && echo on-a-tty-$((6*7)); exit 3\r")
	// A pty's master may not take read deadlines: it is read aside.
	seen := &syncbuf.Buffer{}
	go io.Copy(seen, ptmx)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(seen.String(), "on-a-tty-42") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("the guest's shell did not answer on a terminal; the terminal showed %q", seen.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case code := <-exit:
		if code != 3 {
			t.Errorf("shell exited %d, want the guest shell's 3; the terminal showed %q", code, seen.String())
		}
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatalf("the shell did not end; the terminal showed %q", seen.String())
	}
}
