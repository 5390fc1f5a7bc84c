package budget

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// The file keeps the newest days and sessions only, whatever a long life
// adds: it stays small enough to be written at every answer.
func TestStoreIsBounded(t *testing.T) {
	s := newStore(t)
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err := s.Update(func(f *File) {
		for i := range MaxDays + 50 {
			f.day(DayOf(start.AddDate(0, 0, i))).Requests = int64(i)
		}
		for i := range MaxSessions + 50 {
			f.putSession(Session{ID: fmt.Sprint(i), What: "ask", Started: start.Add(time.Duration(i) * time.Minute), Limit: Limit{Tokens: 1e6}, Stopped: strings.Repeat("x", 300)})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.Read()
	if err != nil || len(f.Days) != MaxDays || f.Days[0].Requests != 50 || len(f.Sessions) != MaxSessions || f.Sessions[0].ID != "50" {
		t.Fatalf("%v %d days, %d sessions", err, len(f.Days), len(f.Sessions))
	}
	if st, _ := os.Stat(s.Path); st.Size() > maxFile/2 || st.Mode().Perm() != 0o600 {
		t.Fatalf("%d bytes, %v", st.Size(), st.Mode())
	}
}

// A usage file that is not one cowork wrote is not read: hostd moves it
// aside and counts anew, saying so; the CLI says what to do.
func TestABrokenStoreIsMovedAside(t *testing.T) {
	for name, body := range map[string]string{
		"garbage":   "{days: nonsense",
		"a version": `{"version": 9}`,
		"oversized": `{"version": 1, "days": [` + strings.Repeat(`{"day":"2025-01-01"},`, maxFile/20) + `{}]}`,
	} {
		s := newStore(t)
		os.WriteFile(s.Path, []byte(body), 0o600)
		if _, err := s.Read(); err == nil || !strings.Contains(err.Error(), "usage file "+s.Path) || !strings.Contains(err.Error(), "move it away") {
			t.Errorf("%s: read %v", name, err)
		}
		l, warn := New(Config{Store: s})
		if warn == nil || !strings.Contains(warn.Error(), "moved to "+s.Path+".broken") {
			t.Errorf("%s: %v", name, warn)
		}
		spend(t, l.Open("a", "ask", Limit{}, nil), 5)
		if f, err := s.Read(); err != nil || f.Today(DayOf(time.Now())).AllTokens() != 5 {
			t.Errorf("%s: after: %v", name, err)
		}
	}
	s := newStore(t)
	os.Symlink("/etc/passwd", s.Path)
	if _, err := s.Read(); err == nil {
		t.Error("a link was read")
	}
}

// A store that cannot be written leaves the count in memory: the budget
// holds all the same, and the error is said.
func TestAFailingStoreStillCounts(t *testing.T) {
	s := newStore(t)
	s.Path = t.TempDir() + "/no/such/dir/usage.json"
	l, _ := New(Config{Store: s})
	a := l.Open("a", "ask", Limit{Tokens: 10}, nil)
	tk, _ := a.Admit(context.Background(), Request{})
	if _, err := tk.Settle(answer(20), answered); err == nil {
		t.Fatal("no error from a store that cannot be written")
	}
	if _, err := a.Admit(context.Background(), Request{}); err == nil {
		t.Fatal("admitted past the budget")
	}
}
