package policycmd

import (
	"fmt"
	"time"
)

// timeFlag is --since or --until: how long ago (90m, 2h; 0 for no
// bound), or a time (2025-03-01T10:00:00Z, 2025-03-01T10:00:00,
// 2025-03-01 10:00, 2025-03-01,
// in local time unless it says). The audit log's times are absolute, so
// both forms mean one instant, fixed when the flag is read.
type timeFlag struct {
	t   *time.Time
	raw string
	now func() time.Time
}

// sinceLayout is the time `policy learn` prints for suggest's --since:
// local, to the second.
const sinceLayout = "2006-01-02T15:04:05"

// timeLayouts are the times a flag takes besides a duration, local
// unless the text gives a zone.
var timeLayouts = []string{time.RFC3339Nano, sinceLayout, "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"}

func (f *timeFlag) String() string { return f.raw }
func (f *timeFlag) Type() string   { return "DURATION|TIME" }

func (f *timeFlag) Set(s string) error {
	f.raw = s
	if s == "0" || s == "" {
		*f.t = time.Time{}
		return nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return fmt.Errorf("%s is negative: say how long ago, like 1h, or a time", s)
		}
		*f.t = f.now().Add(-d)
		return nil
	}
	for _, l := range timeLayouts {
		if t, err := time.ParseInLocation(l, s, time.Local); err == nil {
			*f.t = t
			return nil
		}
	}
	return fmt.Errorf("want how long ago (30m, 2h) or a time (2025-03-01 10:00, RFC 3339)")
}
