//go:build linux

package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// sshPeer is an sshd on a loopback port, configured at its best for the
// comparison: key auth, curve25519 key exchange, AES-GCM, and a shell that
// reads no rc files (SHLVL=1 stops bash from sourcing ~/.bashrc for ssh).
type sshPeer struct {
	sshClient
	cmd *exec.Cmd
}

// sshClient runs ssh at its best configuration against one server.
type sshClient struct {
	key, dir string // the private key; a directory for control sockets
	port     int
}

func startSSHD(dir string) (*sshPeer, error) {
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		if sshd, err = exec.LookPath("/usr/sbin/sshd"); err != nil {
			return nil, fmt.Errorf("no sshd; install openssh-server (make deps)")
		}
	}
	for _, k := range []string{"host_key", "user_key"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user_key.pub"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	config := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %[2]s/host_key
AuthorizedKeysFile %[2]s/authorized_keys
PidFile %[2]s/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
UseDNS no
KexAlgorithms curve25519-sha256
Ciphers aes128-gcm@openssh.com
SetEnv SHLVL=1
MaxStartups 100:30:200
MaxSessions 100
`, port, dir)
	cfg := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, err
	}
	_ = os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	p := &sshPeer{sshClient: sshClient{key: filepath.Join(dir, "user_key"), dir: dir, port: port}}
	p.cmd = exec.Command(sshd, "-D", "-e", "-f", cfg)
	p.cmd.Stderr, _ = os.Create(filepath.Join(dir, "sshd.log"))
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			if err := p.command(false, "true").Run(); err != nil {
				log, _ := os.ReadFile(filepath.Join(dir, "sshd.log"))
				p.stop()
				return nil, fmt.Errorf("ssh to the bench sshd: %v\n%s", err, log)
			}
			return p, nil
		}
	}
	p.stop()
	return nil, fmt.Errorf("sshd did not listen on port %d", port)
}

// command is `ssh ... remote`, with connection sharing on or off.
func (p *sshClient) command(shared bool, remote string) *exec.Cmd {
	args := []string{
		"-F", "/dev/null", "-T",
		"-i", p.key,
		"-p", strconv.Itoa(p.port),
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR",
		"-o", "KexAlgorithms=curve25519-sha256",
		"-o", "Ciphers=aes128-gcm@openssh.com",
	}
	if shared {
		args = append(args, "-o", "ControlMaster=auto", "-o", "ControlPath="+filepath.Join(p.dir, "cm-%C"), "-o", "ControlPersist=300")
	} else {
		args = append(args, "-o", "ControlMaster=no", "-o", "ControlPath=none")
	}
	args = append(args, "root@127.0.0.1", remote)
	return exec.Command("ssh", args...)
}

// closeMaster ends the shared connection, if one was made.
func (p *sshClient) closeMaster() {
	_ = exec.Command("ssh", "-o", "ControlPath="+filepath.Join(p.dir, "cm-%C"), "-p", strconv.Itoa(p.port), "-O", "exit", "root@127.0.0.1").Run()
}

func (p *sshPeer) stop() {
	p.closeMaster()
	if p.cmd.Process != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
