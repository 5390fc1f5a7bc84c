package budget

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/usage"
	"github.com/coworkhq/cowork/internal/smallfile"
)

// Bounds of usage.json: the days and the sessions it keeps (the oldest go
// first), and the most it reads. At these bounds it is about 200 KiB.
const (
	MaxDays     = 400
	MaxSessions = 200
	maxFile     = 1 << 20
)

// fileVersion is the format's version; a file of another is not read.
const fileVersion = 1

// File is usage.json in an instance's folder: what its API sessions
// spent, by UTC day and by session, kept across hostd's restarts for
// `cowork usage` and the daily budget. hostd writes it (and a throwaway
// clone's hostd its parent's); the CLI reads it.
type File struct {
	Version int `json:"version"`
	// Largest is the largest answer counted yet: the least a request in
	// flight is taken to cost when admissions are judged (see Ledger).
	Largest Largest `json:"largest"`
	// Days, oldest first.
	Days []Day `json:"days"`
	// Sessions, oldest first by their start.
	Sessions []Session `json:"sessions"`
}

// Largest is the most tokens and the highest cost of one answer.
type Largest struct {
	Tokens  int64   `json:"tokens"`
	CostUSD float64 `json:"cost_usd"`
}

// Totals add answers up.
type Totals struct {
	// Requests are the Messages API calls forwarded; Refused those the
	// budget refused.
	Requests int64 `json:"requests"`
	Refused  int64 `json:"refused,omitempty"`
	usage.Tokens
	// Estimated are the tokens charged beyond what answers' usage said
	// (an answer cut short, one whose usage could not be read, a request
	// given up before its answer: see Ticket.Settle): budgets count them.
	Estimated int64   `json:"estimated_tokens,omitempty"`
	CostUSD   float64 `json:"cost_usd"`
	// Unpriced counts answers of a model the price table does not name,
	// priced at its price for unknown models.
	Unpriced int64 `json:"unpriced,omitempty"`
}

// AllTokens are the tokens a token budget counts: every kind, and the
// estimated ones.
func (t Totals) AllTokens() int64 { return t.Tokens.Total() + t.Estimated }

// Add adds u to t.
func (t *Totals) Add(u Totals) {
	t.Requests += u.Requests
	t.Refused += u.Refused
	t.Tokens.Add(u.Tokens)
	t.Estimated += u.Estimated
	t.CostUSD += u.CostUSD
	t.Unpriced += u.Unpriced
}

// Day is one UTC day's totals.
type Day struct {
	Day string `json:"day"` // 2006-01-02, UTC
	Totals
}

// Session is one API session's totals: an `ask` or a `claude`.
type Session struct {
	ID   string `json:"id"`
	What string `json:"what,omitempty"` // ask, claude; "" for a program's own
	// Instance is the throwaway clone it ran in (`ask --rm`), whose
	// spend is its parent's.
	Instance string    `json:"instance,omitempty"`
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended,omitzero"`
	Limit    Limit     `json:"limit,omitzero"`
	Totals
	// Stopped is why its budget first refused a request.
	Stopped string `json:"stopped,omitempty"`
}

// DayOf is t's UTC day, as Day names it.
func DayOf(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// Store is a usage.json and the lock file that orders its writers.
type Store struct {
	Path, Lock string
}

// Read reads the file; an empty File when there is none.
func (s Store) Read() (*File, error) {
	f, _, err := s.read()
	return f, err
}

// read is Read, also returning the stamp of the file it read (zero when
// there is none).
func (s Store) read() (*File, stamp, error) {
	f, st, err := readFile(s.Path)
	if err != nil {
		return nil, stamp{}, fmt.Errorf("usage file %s: %w", s.Path, err)
	}
	return f, st, nil
}

// Update reads the file, changes it with fn and writes it back (whole, by
// a rename), under an exclusive lock on s.Lock: hostds of one instance
// and of its throwaway clones write it side by side.
func (s Store) Update(fn func(*File)) (*File, error) {
	f, _, err := s.update(fn)
	return f, err
}

// update is Update, also returning the stamp of the file it wrote, taken
// under the lock: another hostd may write it again the moment the lock is
// released, and a stamp taken then would be of a file not read.
func (s Store) update(fn func(*File)) (*File, stamp, error) {
	lock, err := os.OpenFile(s.Lock, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, stamp{}, fmt.Errorf("usage file lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, stamp{}, fmt.Errorf("usage file lock: %w", err)
	}
	f, err := s.Read()
	if err != nil {
		return nil, stamp{}, err
	}
	fn(f)
	f.prune()
	b, err := json.Marshal(f)
	if err != nil {
		return nil, stamp{}, err
	}
	if err := smallfile.WriteAtomic(s.Path, append(b, '\n'), 0o600); err != nil {
		return nil, stamp{}, fmt.Errorf("usage file %s: %w", s.Path, err)
	}
	return f, stampOf(s.Path), nil
}

// readFile reads a usage file: a regular file (not a link), of at most
// maxFile bytes, of this version. Its stamp is of the file it read.
func readFile(path string) (*File, stamp, error) {
	fd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return &File{Version: fileVersion}, stamp{}, nil
	}
	if err != nil {
		return nil, stamp{}, err
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, stamp{}, errors.New("not a regular file; move it away, and cowork starts counting anew")
	}
	b, err := io.ReadAll(io.LimitReader(fd, maxFile+1))
	if err != nil {
		return nil, stamp{}, err
	}
	if len(b) > maxFile {
		return nil, stamp{}, fmt.Errorf("over %d KiB, more than cowork writes; move it away, and cowork starts counting anew", maxFile>>10)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, stamp{}, fmt.Errorf("unreadable (%v); move it away, and cowork starts counting anew", err)
	}
	if f.Version != fileVersion {
		return nil, stamp{}, fmt.Errorf("version %d, not %d: written by another cowork; move it away, and cowork starts counting anew", f.Version, fileVersion)
	}
	f.clamp()
	return &f, stampOfInfo(st), nil
}

// clamp takes a count or cost below zero (a hand-edited file's) as zero:
// a negative total spent would leave room under any limit.
func (f *File) clamp() {
	c := func(t *Totals) {
		for _, v := range []*int64{&t.Requests, &t.Refused, &t.Input, &t.Output, &t.CacheWrite, &t.CacheRead, &t.Estimated, &t.Unpriced} {
			*v = max(0, *v)
		}
		t.CostUSD = max(0, t.CostUSD)
	}
	for i := range f.Days {
		c(&f.Days[i].Totals)
	}
	for i := range f.Sessions {
		c(&f.Sessions[i].Totals)
	}
	f.Largest.Tokens, f.Largest.CostUSD = max(0, f.Largest.Tokens), max(0, f.Largest.CostUSD)
}

// prune keeps the newest MaxDays days and MaxSessions sessions.
func (f *File) prune() {
	f.Version = fileVersion
	slices.SortStableFunc(f.Days, func(a, b Day) int { return cmp.Compare(a.Day, b.Day) })
	f.Days = f.Days[max(0, len(f.Days)-MaxDays):]
	slices.SortStableFunc(f.Sessions, func(a, b Session) int { return a.Started.Compare(b.Started) })
	f.Sessions = f.Sessions[max(0, len(f.Sessions)-MaxSessions):]
}

// day is the named day's totals, added when missing.
func (f *File) day(name string) *Day {
	for i := range f.Days {
		if f.Days[i].Day == name {
			return &f.Days[i]
		}
	}
	f.Days = append(f.Days, Day{Day: name})
	return &f.Days[len(f.Days)-1]
}

// Today is the totals of the day named, zero when there are none.
func (f *File) Today(name string) Totals {
	for _, d := range f.Days {
		if d.Day == name {
			return d.Totals
		}
	}
	return Totals{}
}

// putSession replaces the session of s's id, or adds it.
func (f *File) putSession(s Session) {
	for i := range f.Sessions {
		if f.Sessions[i].ID == s.ID {
			f.Sessions[i] = s
			return
		}
	}
	f.Sessions = append(f.Sessions, s)
}
