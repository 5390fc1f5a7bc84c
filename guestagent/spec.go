package guestagent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/coworkhq/cowork/internal/execwire"
)

// DefaultPath is the PATH a process gets unless its request sets one.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Limits on what one Start may ask for; they keep a bad request from
// costing the agent more than a bad request deserves.
const (
	maxArgs     = 4096
	maxEnv      = 4096
	maxTermSide = 10000
)

// procSpec is a validated Start: everything needed to launch the process.
type procSpec struct {
	path string // resolved executable
	argv []string
	env  []string
	dir  string
	user *account
	tty  *execwire.TerminalSize
	// noStdin gives the process /dev/null for input.
	noStdin bool
	// marker is the value of COWORK_EXEC in the process's environment,
	// which its descendants inherit; endSession ends them all when it
	// exits (StartMsg.EndSession).
	marker     string
	endSession bool
}

// account is the guest user a process runs as.
type account struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32
	home   string
	shell  string
}

// resolveSpec validates a Start and resolves its user, directory and
// executable. Its errors are *refusal, worded for the person who sent it.
func resolveSpec(start *execwire.StartMsg, defaultUser string, accts *accountCache) (*procSpec, error) {
	if len(start.Argv) == 0 || start.Argv[0] == "" {
		return nil, refusef(execwire.KindInvalid, "empty argv: name the program to run")
	}
	if len(start.Argv) > maxArgs {
		return nil, refusef(execwire.KindInvalid, "%d arguments is over the limit of %d", len(start.Argv), maxArgs)
	}
	for _, a := range start.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, refusef(execwire.KindInvalid, "an argument contains a NUL byte")
		}
	}
	if start.ExecID != "" && !execwire.ValidExecID(start.ExecID) {
		return nil, refusef(execwire.KindInvalid, "exec id %.40q: want %d lowercase hex digits", start.ExecID, execwire.ExecIDLen)
	}
	name := start.User
	if name == "" {
		name = defaultUser
	}
	acct, err := accts.lookup(name)
	if err != nil {
		return nil, err
	}
	env, err := buildEnv(acct, start.Env, start.TTY != nil)
	if err != nil {
		return nil, err
	}
	dir, err := resolveDir(start.Cwd, acct)
	if err != nil {
		return nil, err
	}
	path, err := lookPath(start.Argv[0], envValue(env, "PATH"), dir)
	if err != nil {
		return nil, err
	}
	tty := start.TTY
	if tty != nil && (tty.Rows == 0 || tty.Cols == 0) {
		tty = &execwire.TerminalSize{Rows: 24, Cols: 80} // size unknown
	}
	if tty != nil {
		if err := checkTerminalSize(tty); err != nil {
			return nil, refusef(execwire.KindInvalid, "%v", err)
		}
	}
	return &procSpec{path: path, argv: start.Argv, env: env, dir: dir, user: acct, tty: tty, noStdin: start.NoStdin && tty == nil}, nil
}

// lookup finds a user by name or numeric uid ("" means the agent's own
// user) and checks that the agent may run processes as it.
func (c *accountCache) lookup(name string) (*account, error) {
	acct, err := c.get(name)
	if err != nil {
		return nil, err
	}
	if self := os.Geteuid(); self != 0 && uint32(self) != acct.uid {
		return nil, refusef(execwire.KindPermission, "the agent runs as uid %d and cannot run commands as %s (uid %d); run it as root, or leave the user unset", self, acct.name, acct.uid)
	}
	return acct, nil
}

// accountCache caches user lookups: parsing /etc/passwd and /etc/group
// took longer than the rest of an exec's bookkeeping. An entry lives until
// either file changes. The Server holds one; its zero value is empty.
type accountCache struct {
	mu     sync.Mutex
	stamp  string
	byName map[string]*account
}

func (c *accountCache) get(name string) (*account, error) {
	stamp := fileStamp("/etc/passwd") + fileStamp("/etc/group")
	c.mu.Lock()
	if c.stamp != stamp {
		c.stamp, c.byName = stamp, map[string]*account{}
	}
	acct, ok := c.byName[name]
	c.mu.Unlock()
	if ok {
		return acct, nil
	}
	acct, err := loadAccount(name)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.stamp == stamp {
		c.byName[name] = acct
	}
	c.mu.Unlock()
	return acct, nil
}

func fileStamp(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return "-"
	}
	return fmt.Sprintf("%d.%d;", st.ModTime().UnixNano(), st.Size())
}

func loadAccount(name string) (*account, error) {
	var u *user.User
	var err error
	switch {
	case name == "":
		u, err = user.LookupId(strconv.Itoa(os.Geteuid()))
	case isDigits(name):
		u, err = user.LookupId(name)
	default:
		u, err = user.Lookup(name)
	}
	if err != nil {
		var unknownName user.UnknownUserError
		var unknownID user.UnknownUserIdError
		if errors.As(err, &unknownName) || errors.As(err, &unknownID) {
			return nil, refusef(execwire.KindInvalid, "unknown user %q: no such user in the guest", name)
		}
		return nil, refusef(execwire.KindFailed, "look up user %q: %v", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, refusef(execwire.KindFailed, "user %q has a non-numeric uid or gid", u.Username)
	}
	acct := &account{name: u.Username, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir, shell: "/bin/sh"}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				acct.groups = append(acct.groups, uint32(g))
			}
		}
	}
	if sh := loginShell(u.Username); sh != "" {
		acct.shell = sh
	}
	return acct, nil
}

// credential is what the child's setuid/setgid/setgroups should be, or nil
// when the agent already is that user and must not (cannot) change identity.
func (a *account) credential() *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	return &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groups}
}

// loginShell reads the user's shell from /etc/passwd; os/user does not expose it.
func loginShell(name string) string {
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) == 7 && f[0] == name {
			return f[6]
		}
	}
	return ""
}

// buildEnv lays the request's KEY=VALUE entries over a login-like default.
func buildEnv(a *account, extra []string, tty bool) ([]string, error) {
	if len(extra) > maxEnv {
		return nil, refusef(execwire.KindInvalid, "%d environment entries is over the limit of %d", len(extra), maxEnv)
	}
	env := []string{
		"PATH=" + DefaultPath,
		"HOME=" + a.home,
		"USER=" + a.name,
		"LOGNAME=" + a.name,
		"SHELL=" + a.shell,
		"LANG=C.UTF-8",
	}
	if tty {
		env = append(env, "TERM=xterm-256color")
	}
	for _, kv := range extra {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.IndexByte(kv, 0) >= 0 {
			return nil, refusef(execwire.KindInvalid, "environment entry %q is not KEY=VALUE", kv)
		}
		env = setEnv(env, kv)
	}
	return env, nil
}

// setEnv replaces KEY's entry in env, or appends it.
func setEnv(env []string, kv string) []string {
	k, _, _ := strings.Cut(kv, "=")
	for i, e := range env {
		if strings.HasPrefix(e, k+"=") {
			env[i] = kv
			return env
		}
	}
	return append(env, kv)
}

func envValue(env []string, key string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, key+"="); ok {
			return v
		}
	}
	return ""
}

// resolveDir checks the working directory; empty means the user's home, or /
// when the home does not exist.
func resolveDir(dir string, a *account) (string, error) {
	if dir == "" {
		if st, err := os.Stat(a.home); err == nil && st.IsDir() {
			return a.home, nil
		}
		return "/", nil
	}
	if !filepath.IsAbs(dir) {
		return "", refusef(execwire.KindInvalid, "working directory %q is not an absolute path", dir)
	}
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", refusef(execwire.KindInvalid, "working directory %s does not exist in the guest", dir)
	}
	if err != nil {
		return "", refusef(execwire.KindInvalid, "working directory %s: %v", dir, err)
	}
	if !st.IsDir() {
		return "", refusef(execwire.KindInvalid, "working directory %s is not a directory", dir)
	}
	return dir, nil
}

// lookPath finds name the way a shell would, but in the child's PATH rather
// than the agent's (os/exec only knows the latter).
func lookPath(name, pathEnv, dir string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := checkExecutable(p); err != nil {
			return "", refusef(execwire.KindNotFound, "%s: %v", name, err)
		}
		return p, nil
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		p := filepath.Join(d, name)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", refusef(execwire.KindNotFound, "executable %q not found in PATH (%s)", name, pathEnv)
}

func checkExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errors.New("no such file")
		}
		return err
	}
	if st.IsDir() {
		return errors.New("is a directory")
	}
	if st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("not executable (mode %s)", st.Mode().Perm())
	}
	return nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
