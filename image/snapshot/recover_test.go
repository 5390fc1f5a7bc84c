package snapshot

import (
	"os"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
)

// A create cut short after any step leaves an instance that Recover (run
// by the next operation and by hostd before a boot) gives its data back
// to: the snapshot undone before the disk moved, finished after.
func TestRecoverAfterACut(t *testing.T) {
	for _, c := range []struct {
		step     string
		finished bool
	}{
		{"intent", false}, {"mkdir", false},
		{"rename", true}, {"chmod", true}, {"overlay", true}, {"config", true}, {"meta", true},
	} {
		for _, second := range []bool{false, true} {
			name := c.step
			if second {
				name += " (on a qcow2 disk)"
			}
			t.Run(name, func(t *testing.T) {
				p, cfg, data := newInstance(t)
				if second {
					if _, err := Create(p, cfg, "s0"); err != nil {
						t.Fatal(err)
					}
					write(t, p.DiskFor(instance.DiskQcow2), []byte("on s0"))
					first := make([]byte, 1<<16)
					copy(first, "on s0")
					data = append(first, data[1<<16:]...)
				}
				cut = func(step string) bool { return step == c.step }
				_, err := Create(p, cfg, "s1")
				cut = func(string) bool { return false }
				if err == nil || !strings.Contains(err.Error(), "cut short") {
					t.Fatalf("Create = %v, want the cut", err)
				}
				if c.step == "overlay" || c.step == "rename" {
					// A crash in CreateOverlayOn leaves its temporary file.
					os.WriteFile(p.DiskFor(instance.DiskQcow2)+".tmp", []byte("half"), 0o600)
				}
				cfg = loadCfg(t, p) // as a new process reads it
				if _, err := Recover(p, cfg); err != nil {
					t.Fatalf("Recover: %v", err)
				}
				if exists(p.SnapshotIntent()) {
					t.Error("the intent is left")
				}
				if saved := loadCfg(t, p); saved.Format() != cfg.Format() {
					t.Errorf("Recover left cfg %q, saved %q", cfg.Format(), saved.Format())
				}
				wantContent(t, content(t, p, cfg), data, "after Recover")
				_, err = Load(p, "s1")
				if c.finished && err != nil {
					t.Errorf("the snapshot was not finished: %v", err)
				}
				if !c.finished && (err == nil || exists(Dir(p, "s1"))) {
					t.Errorf("the snapshot was not undone: %v", err)
				}
				if c.finished && On(p, cfg) != "s1" {
					t.Errorf("the disk is on %q, want s1", On(p, cfg))
				}
				if exists(p.DiskFor(instance.DiskQcow2) + ".tmp") {
					t.Error("a half-made overlay is left")
				}
				// Nothing more to do, and the next create works.
				if changed, err := Recover(p, cfg); changed || err != nil {
					t.Errorf("a second Recover: %v, %v", changed, err)
				}
				if _, err := Create(p, cfg, "s2"); err != nil {
					t.Errorf("create after recovery: %v", err)
				}
			})
		}
	}
}

// A record that is not a create's is refused, not acted on.
func TestRecoverRefusesABadIntent(t *testing.T) {
	for _, b := range []string{`nonsense`, `{"op":"rm"}`, `{"op":"create","meta":{"name":"../x","format":"raw"}}`, `{"op":"create","meta":{"name":"s","format":"vmdk"}}`} {
		p, cfg, data := newInstance(t)
		os.WriteFile(p.SnapshotIntent(), []byte(b), 0o600)
		if _, err := Recover(p, cfg); err == nil || !strings.Contains(err.Error(), "not a snapshot's record") {
			t.Errorf("%s: Recover = %v", b, err)
		}
		wantContent(t, content(t, p, cfg), data, b)
	}
}

// The next snapshot command finishes a create cut short before it acts.
func TestNextOperationRecovers(t *testing.T) {
	p, cfg, data := newInstance(t)
	cut = func(step string) bool { return step == "rename" }
	_, err := Create(p, cfg, "s1")
	cut = func(string) bool { return false }
	if err == nil {
		t.Fatal("no cut")
	}
	cfg = loadCfg(t, p)
	s2, err := Create(p, cfg, "s2")
	if err != nil {
		t.Fatal(err)
	}
	if s2.Parent != "s1" || exists(p.SnapshotIntent()) {
		t.Errorf("s2 = %+v; intent left: %v", s2.Meta, exists(p.SnapshotIntent()))
	}
	wantContent(t, content(t, p, cfg), data, "after s2")
}
