package usage

import (
	"bytes"
	"encoding/json"
	"mime"
	"strings"
)

// Bounds of what a Meter keeps of one answer, whatever its size: the
// line of a stream it is reading (only a usage event's is kept whole),
// and the values it takes from a JSON answer.
const (
	maxEvent = 64 << 10
	maxValue = 16 << 10
)

// Meter reads an answer's usage from its body as the body passes: Write
// it each piece of the body, in order, then read Result. It keeps a few
// KiB at most, and takes nothing it cannot read for a count: a stream's
// other events, lines over its bounds, values that are no counts.
//
// A streamed answer's usage is in its message_start event (the input and
// cache counts, an early output count) and its message_delta events,
// whose counts are the answer's totals so far: the last count of each
// kind is the answer's. A JSON answer's is its top-level "usage".
type Meter struct {
	sse bool
	js  *jsonScan // a JSON answer's scanner; nil for a stream or another type

	// A stream's state: the line being read, the event's name and data.
	line      []byte
	overlong  bool // the line passed maxEvent: dropped to its end
	cr        bool // the last byte was a '\r', which ends a line
	event     string
	data      []byte
	dataSkip  bool // the event is not one the meter reads, or its data is lost
	dataLines int

	res Result
}

// Result is what a Meter read.
type Result struct {
	Model  string
	Tokens Tokens
	// Found says the answer carried a usage the meter could read.
	Found bool
	// Ignored counts the usage events or values it could not read.
	Ignored int
	// Complete says the answer was read to its end: a stream's
	// message_stop event, a JSON answer's closing brace. An answer cut
	// short may have cost more than its usage so far says.
	Complete bool
}

// NewMeter reads an answer of the given Content-Type: server-sent events
// (a streamed answer) or JSON; any other type yields nothing.
func NewMeter(contentType string) *Meter {
	mt, _, _ := mime.ParseMediaType(contentType)
	m := &Meter{}
	switch strings.ToLower(mt) {
	case "text/event-stream":
		m.sse = true
	case "application/json":
		m.js = &jsonScan{}
	}
	return m
}

// Write reads p, the next piece of the body. It never fails.
func (m *Meter) Write(p []byte) (int, error) {
	switch {
	case m.sse:
		m.scanLines(p)
	case m.js != nil:
		m.js.write(p)
	}
	return len(p), nil
}

// Result is the usage read so far: at the end of the body, the answer's.
func (m *Meter) Result() Result {
	r := m.res
	if m.js != nil {
		m.js.result(&r)
	}
	return r
}

// scanLines splits p into lines (ended by "\n", "\r\n" or "\r", as
// server-sent events may be) and reads each.
func (m *Meter) scanLines(p []byte) {
	for len(p) > 0 {
		if m.cr && p[0] == '\n' { // the "\n" of a "\r\n"
			p = p[1:]
			m.cr = false
			continue
		}
		m.cr = false
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			m.keep(p)
			return
		}
		m.keep(p[:i])
		m.cr = p[i] == '\r'
		p = p[i+1:]
		if !m.overlong {
			m.readLine(m.line)
		} else {
			m.dataSkip = true // a line of this event was lost
		}
		m.line, m.overlong = m.line[:0], false
	}
}

// keep adds part of a line, within the bound.
func (m *Meter) keep(b []byte) {
	if m.overlong || len(m.line)+len(b) > maxEvent {
		m.overlong, m.line = true, m.line[:0]
		return
	}
	m.line = append(m.line, b...)
}

// readLine reads one line of the stream: a field of the event, or the
// blank line that ends it.
func (m *Meter) readLine(line []byte) {
	if len(line) == 0 {
		m.dispatch()
		return
	}
	field, value, _ := bytes.Cut(line, []byte(":"))
	value = bytes.TrimPrefix(value, []byte(" "))
	switch string(field) {
	case "event":
		m.event = string(value)
		if !usageEvent(m.event) && m.event != stopEvent {
			m.dataSkip = true
		}
	case "data":
		if m.dataSkip {
			return
		}
		if m.dataLines > 0 {
			m.data = append(m.data, '\n')
		}
		m.dataLines++
		if len(m.data)+len(value) > maxEvent {
			m.dataSkip = true
			return
		}
		m.data = append(m.data, value...)
	}
}

func usageEvent(name string) bool { return name == "message_start" || name == "message_delta" }

// stopEvent ends a streamed answer.
const stopEvent = "message_stop"

// dispatch reads the event that just ended, when it is one with a usage.
func (m *Meter) dispatch() {
	name, data, skip := m.event, m.data, m.dataSkip
	m.event, m.data, m.dataSkip, m.dataLines = "", m.data[:0], false, 0
	if skip {
		if usageEvent(name) {
			m.res.Ignored++ // its data was too long, or a line of it was
		}
		return
	}
	if len(data) == 0 {
		return
	}
	if name == "" && !bytes.Contains(data, []byte(`"message_`)) {
		return // an unnamed event that cannot be one of the three
	}
	var ev struct {
		Type    string `json:"type"`
		Message *struct {
			Model string    `json:"model"`
			Usage *rawUsage `json:"usage"`
		} `json:"message"`
		Usage *rawUsage `json:"usage"`
	}
	err := json.Unmarshal(data, &ev)
	if err == nil && ev.Type == stopEvent && (name == "" || name == stopEvent) {
		m.res.Complete = true
		return
	}
	if err != nil || !usageEvent(ev.Type) || name != "" && ev.Type != name {
		if usageEvent(name) {
			m.res.Ignored++
		}
		return
	}
	u := ev.Usage
	if ev.Type == "message_start" {
		if ev.Message == nil {
			m.res.Ignored++
			return
		}
		m.res.Model = clipModel(ev.Message.Model)
		u = ev.Message.Usage
	}
	m.res.merge(u)
}

// rawUsage is a usage as the API writes it: a count left out (or null)
// leaves the one read before.
type rawUsage struct {
	Input      *int64 `json:"input_tokens"`
	Output     *int64 `json:"output_tokens"`
	CacheWrite *int64 `json:"cache_creation_input_tokens"`
	CacheRead  *int64 `json:"cache_read_input_tokens"`
}

// merge takes u's counts as the answer's so far.
func (r *Result) merge(u *rawUsage) {
	if u == nil {
		r.Ignored++
		return
	}
	set := func(dst *int64, v *int64) {
		if v != nil {
			*dst = bound(*v)
			r.Found = true
		}
	}
	set(&r.Tokens.Input, u.Input)
	set(&r.Tokens.Output, u.Output)
	set(&r.Tokens.CacheWrite, u.CacheWrite)
	set(&r.Tokens.CacheRead, u.CacheRead)
}

// clipModel bounds a model's name as the audit keeps it.
func clipModel(s string) string {
	if len(s) > maxModel {
		s = s[:maxModel]
	}
	return strings.ToValidUTF8(s, "")
}

const maxModel = 128
