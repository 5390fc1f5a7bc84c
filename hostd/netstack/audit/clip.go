package audit

import (
	"encoding/json"
	"reflect"
	"time"
	"unicode/utf8"
)

// clipRecord is the JSON of r with its long strings clipped so that it
// takes at most max bytes, marked "clipped":true. Most of a record's
// strings come from the guest, or from servers it chose (a URL, a Host, a
// claimed name, DNS answers, an error): one of them must not make a line
// that a reader cannot hold. Every string of the record is clipped, those
// in lists too, and lists are shortened: first to clipStart bytes (and
// items), then half that, until the JSON fits (escaping can make a string
// six times longer). Strings of up to minClip bytes are kept whole, so a
// record's kind and verdict never change. r is not modified.
func clipRecord(r *Record, max int) ([]byte, error) {
	var b []byte
	for limit := clipStart; ; limit /= 2 {
		c := *r
		clipValue(reflect.ValueOf(&c).Elem(), limit)
		c.Clipped = true
		var err error
		if b, err = json.Marshal(&c); err != nil {
			return nil, err
		}
		if len(b) <= max || limit <= minClip {
			return b, nil // at minClip it is as short as it gets
		}
	}
}

const (
	clipStart = 16 << 10
	minClip   = 16
)

var timeType = reflect.TypeFor[time.Time]()

// clipValue clips the strings in v (settable) to limit bytes, and its
// lists of strings to limit/16 items. Slices and pointers are replaced by
// clipped copies: what v shares with the caller's record is left alone.
func clipValue(v reflect.Value, limit int) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(clipString(v.String(), limit))
	case reflect.Slice:
		if v.IsNil() {
			return
		}
		n := min(v.Len(), max(limit/16, 1))
		c := reflect.MakeSlice(v.Type(), n, n)
		reflect.Copy(c, v)
		for i := range n {
			clipValue(c.Index(i), limit)
		}
		v.Set(c)
	case reflect.Pointer:
		if v.IsNil() {
			return
		}
		c := reflect.New(v.Type().Elem())
		c.Elem().Set(v.Elem())
		clipValue(c.Elem(), limit)
		v.Set(c)
	case reflect.Struct:
		if v.Type() == timeType {
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				clipValue(v.Field(i), limit)
			}
		}
	}
}

// clipString is s cut to at most limit bytes (at a character's start),
// followed by "..." when it was cut; a string of at most minClip bytes is
// kept whole.
func clipString(s string, limit int) string {
	limit = max(limit, minClip)
	if len(s) <= limit {
		return s
	}
	i := limit
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}
