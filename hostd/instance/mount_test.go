package instance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseMount(t *testing.T) {
	home, _ := os.UserHomeDir()
	cwd, _ := os.Getwd()
	for in, want := range map[string]Mount{
		"/srv/data":          {Host: "/srv/data", Guest: "/srv/data"},
		"/srv/data:ro":       {Host: "/srv/data", Guest: "/srv/data", ReadOnly: true},
		"/srv/data:/data":    {Host: "/srv/data", Guest: "/data"},
		"/srv/data:/data:ro": {Host: "/srv/data", Guest: "/data", ReadOnly: true},
		"/srv/data:/data:rw": {Host: "/srv/data", Guest: "/data"},
		"~/data:/data":       {Host: filepath.Join(home, "data"), Guest: "/data"},
		"rel:/rel":           {Host: filepath.Join(cwd, "rel"), Guest: "/rel"},
	} {
		got, err := ParseMount(in)
		if err != nil || got != want {
			t.Errorf("ParseMount(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", ":/data", "/a:/b:/c", "/a:/b:ro:ro", ":ro"} {
		if m, err := ParseMount(in); err == nil || !strings.Contains(err.Error(), "HOST[:GUEST][:ro]") {
			t.Errorf("ParseMount(%q) = %+v, %v; want an error showing the form", in, m, err)
		}
	}
}

// What a mount cannot be, each with the reason in the error.
func TestValidateMounts(t *testing.T) {
	base := func(m ...Mount) *Config { return &Config{Workspace: "/home/me/ws", Mounts: m} }
	ok := base(Mount{Host: "/srv/data", Guest: "/data", ReadOnly: true}, Mount{Host: "/home/me/src", Guest: "/home/cowork/src"},
		Mount{Host: "/tmp/x", Guest: "/tmp/x"})
	if err := ok.ValidateMounts(); err != nil {
		t.Errorf("good mounts: %v", err)
	}
	many := base()
	for i := range MaxMounts + 1 {
		many.Mounts = append(many.Mounts, Mount{Host: "/srv/" + string(rune('a'+i)), Guest: "/m/" + string(rune('a'+i))})
	}
	for name, tc := range map[string]struct {
		c    *Config
		want string
	}{
		"too many":          {many, "more than an instance has"},
		"relative guest":    {base(Mount{Host: "/srv", Guest: "data"}), "not absolute"},
		"unclean guest":     {base(Mount{Host: "/srv", Guest: "/data/../etc"}), "not clean"},
		"guest root":        {base(Mount{Host: "/srv", Guest: "/"}), "root folder"},
		"guest /etc":        {base(Mount{Host: "/srv", Guest: "/etc"}), "system folder /etc"},
		"under /usr":        {base(Mount{Host: "/srv", Guest: "/usr/local/data"}), "system folder /usr"},
		"over /proc":        {base(Mount{Host: "/srv", Guest: "/proc"}), "system folder /proc"},
		"guest /home":       {base(Mount{Host: "/srv", Guest: "/home"}), "would hide the guest's /home"},
		"the user's home":   {base(Mount{Host: "/srv", Guest: "/home/cowork"}), "would hide"},
		"comma in guest":    {base(Mount{Host: "/srv", Guest: "/data,uid=0"}), "comma"},
		"over workspace":    {base(Mount{Host: "/srv", Guest: "/workspace/x"}), "overlaps the workspace at /workspace"},
		"host in workspace": {base(Mount{Host: "/home/me/ws/sub", Guest: "/sub"}), "overlaps the workspace /home/me/ws"},
		"host holds it":     {base(Mount{Host: "/home/me", Guest: "/me"}), "overlaps the workspace"},
		"same guest": {base(Mount{Host: "/srv/a", Guest: "/data"}, Mount{Host: "/srv/b", Guest: "/data"}),
			"overlaps /srv/a's /data"},
		"guest inside another": {base(Mount{Host: "/srv/a", Guest: "/data"}, Mount{Host: "/srv/b", Guest: "/data/b"}),
			"overlaps"},
		"host inside another": {base(Mount{Host: "/srv", Guest: "/a", ReadOnly: true}, Mount{Host: "/srv/b", Guest: "/b"}),
			"overlaps the mount of /srv"},
		"relative host": {base(Mount{Host: "srv", Guest: "/a"}), "absolute, clean host path"},
	} {
		err := tc.c.ValidateMounts()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
		if err := tc.c.Validate(0); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate says %v", name, err)
		}
	}
}

// On the host: the folder must be there and be a folder, and neither
// cowork's own folder nor the workspace may be reached through it, links
// followed.
func TestCheckMountHosts(t *testing.T) {
	root := t.TempDir()
	home := filepath.Join(root, "cowork-home")
	ws := filepath.Join(root, "ws")
	data := filepath.Join(root, "data")
	for _, d := range []string{home, ws, data} {
		os.MkdirAll(d, 0o755)
	}
	os.WriteFile(filepath.Join(root, "file"), nil, 0o644)
	os.Symlink(ws, filepath.Join(root, "ws-link"))
	os.Symlink(data, filepath.Join(root, "data-link"))
	check := func(m ...Mount) error { return (&Config{Workspace: ws, Mounts: m}).CheckMountHosts(home) }
	if err := check(Mount{Host: data, Guest: "/data"}); err != nil {
		t.Errorf("a good mount: %v", err)
	}
	for name, tc := range map[string]struct {
		m    []Mount
		want string
	}{
		"missing":          {[]Mount{{Host: filepath.Join(root, "gone"), Guest: "/g"}}, "no such folder; create it first"},
		"a file":           {[]Mount{{Host: filepath.Join(root, "file"), Guest: "/f"}}, "not a folder"},
		"cowork's home":    {[]Mount{{Host: home, Guest: "/h"}}, "cowork's own folder"},
		"holds the home":   {[]Mount{{Host: root, Guest: "/r"}}, "cowork's own folder"},
		"the workspace":    {[]Mount{{Host: filepath.Join(root, "ws-link"), Guest: "/w"}}, "overlaps the workspace"},
		"the same, linked": {[]Mount{{Host: data, Guest: "/a"}, {Host: filepath.Join(root, "data-link"), Guest: "/b"}}, "overlaps another mount's"},
	} {
		if err := check(tc.m...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// A workspace that holds cowork's own folder (through a link too, and
// before either exists) would show the guest every instance's disk and
// keys, one in an instance's folder or the cache those: refused. A folder
// of its own in cowork's folder shows only itself.
func TestCheckWorkspace(t *testing.T) {
	root := t.TempDir()
	home := filepath.Join(root, ".cowork")
	link := filepath.Join(t.TempDir(), "root-link")
	os.Symlink(root, link)
	check := func(ws string) error { return (&Config{Workspace: ws}).CheckWorkspace(home) }
	for _, ws := range []string{root, link} { // before cowork's folder exists: a first init
		if err := check(ws); err == nil || !strings.Contains(err.Error(), "--workspace "+ws+": the folder holds cowork's own folder") {
			t.Errorf("workspace %s, no %s yet: %v", ws, home, err)
		}
	}
	os.MkdirAll(filepath.Join(home, "sandbox", "snapshots"), 0o755)
	os.WriteFile(filepath.Join(home, "sandbox", "config.json"), []byte("{}"), 0o600)
	for _, ws := range []string{root, home, link} {
		if err := check(ws); err == nil || !strings.Contains(err.Error(), "holds cowork's own folder") {
			t.Errorf("workspace %s: %v", ws, err)
		}
	}
	for _, ws := range []string{filepath.Join(home, "sandbox"), filepath.Join(link, ".cowork", "sandbox", "snapshots"), filepath.Join(home, CacheDir, "golden")} {
		if err := check(ws); err == nil || !strings.Contains(err.Error(), "an instance's or the cache's") {
			t.Errorf("workspace %s: %v", ws, err)
		}
	}
	for _, ws := range []string{filepath.Join(root, "ws"), filepath.Join(root, ".cowork-ws"), filepath.Join(home, "ws")} {
		if err := check(ws); err != nil {
			t.Errorf("a folder of its own, %s: %v", ws, err)
		}
	}
}
