package usage

import (
	"bytes"
	"encoding/json"
)

// jsonScan follows a JSON answer's top-level object byte by byte and keeps
// the values of the few keys the meter reads ("type", "model", "usage"),
// each up to maxValue bytes. Everything else (the content, however long)
// passes through unkept, its strings and nesting followed only so that a
// key inside them (the model may well write "usage" in its text) is never
// taken for a top-level one. It checks no more of JSON's grammar than
// that; a body of another shape yields nothing.
type jsonScan struct {
	state   scanState
	depth   int // 1 inside the top-level object
	inStr   bool
	esc     bool
	key     []byte
	keyLong bool
	cur     string // the key whose value is being kept; "" for one that is not
	buf     []byte
	long    bool
	vals    map[string][]byte
	long2   int // values kept too long to read
	bad     bool
	done    bool
	keys    map[string]bool // the keys whose values it keeps; nil: keptKeys
	// seen, when set, takes each value kept instead of vals (which keeps
	// a key's last).
	seen func(key string, v []byte)
}

type scanState uint8

const (
	sStart   scanState = iota // before the object
	sKey                      // a key or the object's end
	sInKey                    // in a key
	sColon                    // after a key
	sValue                    // a value's first byte
	sInValue                  // in a string, object or array value
	sScalar                   // in a number, true, false or null
	sComma                    // after a value
)

var keptKeys = map[string]bool{"type": true, "model": true, "usage": true}

func (j *jsonScan) write(p []byte) {
	for _, c := range p {
		if j.bad || j.done {
			return
		}
		j.step(c)
	}
}

func (j *jsonScan) step(c byte) {
	if j.state == sInValue {
		j.keep(c)
	}
	if j.inStr {
		switch {
		case j.esc:
			j.esc = false
		case c == '\\':
			j.esc = true
		case c == '"':
			j.inStr = false
			if j.depth == 1 && j.state == sInKey {
				j.state = sColon
			} else if j.depth == 1 && j.state == sInValue {
				j.endValue()
			}
		case j.state == sInKey:
			if len(j.key) < 16 {
				j.key = append(j.key, c)
			} else {
				j.keyLong = true
			}
		}
		return
	}
	if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
		return
	}
	if j.depth > 1 { // in a nested value of a top-level member
		switch c {
		case '"':
			j.inStr = true
		case '{', '[':
			j.depth++
		case '}', ']':
			if j.depth--; j.depth == 1 {
				j.endValue()
			}
		}
		return
	}
	switch j.state {
	case sStart:
		if c != '{' {
			j.bad = true
			return
		}
		j.depth, j.state = 1, sKey
	case sKey:
		switch c {
		case '"':
			j.inStr, j.state, j.key, j.keyLong = true, sInKey, j.key[:0], false
		case '}':
			j.done = true
		default:
			j.bad = true
		}
	case sColon:
		if c != ':' {
			j.bad = true
			return
		}
		j.state = sValue
	case sValue:
		j.cur, j.buf, j.long = "", j.buf[:0], false
		keys := j.keys
		if keys == nil {
			keys = keptKeys
		}
		if k := string(j.key); !j.keyLong && keys[k] {
			j.cur = k
		}
		j.keep(c)
		switch c {
		case '"':
			j.inStr, j.state = true, sInValue
		case '{', '[':
			j.depth, j.state = 2, sInValue
		default:
			j.state = sScalar
		}
	case sScalar:
		switch c {
		case ',':
			j.endValue()
			j.state = sKey
		case '}':
			j.endValue()
			j.done = true
		default:
			j.keep(c)
		}
	case sComma:
		switch c {
		case ',':
			j.state = sKey
		case '}':
			j.done = true
		default:
			j.bad = true
		}
	}
}

// keep adds a byte to the value being kept, within the bound.
func (j *jsonScan) keep(c byte) {
	if j.cur == "" || j.long {
		return
	}
	if len(j.buf) >= maxValue {
		j.long, j.buf = true, j.buf[:0]
		return
	}
	j.buf = append(j.buf, c)
}

// endValue ends a top-level member's value: kept, when it is one of
// keptKeys and within the bound.
func (j *jsonScan) endValue() {
	if j.state != sScalar {
		j.state = sComma
	}
	if j.cur == "" {
		return
	}
	switch {
	case j.long:
		j.long2++
	case j.seen != nil:
		j.seen(j.cur, j.buf)
	default:
		if j.vals == nil {
			j.vals = map[string][]byte{}
		}
		j.vals[j.cur] = bytes.Clone(j.buf)
	}
	j.cur = ""
}

// result reads the kept values into r: the usage of an answer whose type
// is "message" (an error answer has none).
func (j *jsonScan) result(r *Result) {
	r.Ignored += j.long2
	r.Complete = j.done && !j.bad
	var typ string
	if v, ok := j.vals["type"]; ok && (json.Unmarshal(v, &typ) != nil || typ != "message") {
		return
	}
	var model string
	if json.Unmarshal(j.vals["model"], &model) == nil {
		r.Model = clipModel(model)
	}
	v, ok := j.vals["usage"]
	if !ok {
		return
	}
	var u rawUsage
	if json.Unmarshal(v, &u) != nil {
		r.Ignored++
		return
	}
	r.merge(&u)
}
