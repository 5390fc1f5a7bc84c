package claudecode

import (
	"fmt"
	"strings"
)

// Parsed is a command line split the way Claude Code's parser splits it.
type Parsed struct {
	// Claude holds Claude Code's options, verbatim and in order, with their values.
	Claude []string
	// Own holds the values of the caller's own options, by long name.
	Own map[string][]string
	// Given lists the long names of Claude Code's options that were used.
	Given map[string]bool
	// Positional are the rest: the prompt.
	Positional []string
	// TrailingVariadic is the variadic option that took the last arguments,
	// if one did: a prompt after it became one of its values.
	TrailingVariadic string
}

// index finds flags by every spelling.
func index(flags []Flag) map[string]*Flag {
	m := map[string]*Flag{}
	for i := range flags {
		for _, n := range flags[i].Names() {
			m[n] = &flags[i]
		}
	}
	return m
}

// ParseArgs splits args into the caller's own options (own), Claude Code's
// options (Flags) and the positional arguments, with commander's rules: a
// required value is the next argument whatever it is; an optional value is
// the next argument unless it starts with '-'; a variadic option takes the
// arguments up to the next one that starts with '-'; "--" ends options. Own
// options win over Claude Code's of the same name.
func ParseArgs(args []string, own []Flag) (*Parsed, error) {
	ownIdx, claudeIdx := index(own), index(Flags)
	args = append([]string(nil), args...) // bundled shorts are expanded in place
	p := &Parsed{Own: map[string][]string{}, Given: map[string]bool{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			p.Positional = append(p.Positional, args[i+1:]...)
			break
		}
		if a == "-" || !strings.HasPrefix(a, "-") {
			p.Positional = append(p.Positional, a)
			continue
		}
		name, value, hasValue := a, "", false
		if strings.HasPrefix(a, "--") {
			name, value, hasValue = strings.Cut(a, "=")
		} else if len(a) > 2 {
			// -xVALUE, or bundled boolean shorts (-vc).
			if f := lookup(a[:2], ownIdx, claudeIdx); f != nil && f.Arity != NoValue {
				name, value, hasValue = a[:2], a[2:], true
			} else if !isLetters(a[1:]) {
				return nil, fmt.Errorf("unknown flag %s; see the Claude Code flags in --help", a)
			} else {
				var expanded []string
				for _, c := range a[1:] {
					expanded = append(expanded, "-"+string(c))
				}
				args = append(args[:i], append(expanded, args[i+1:]...)...)
				i--
				continue
			}
		}
		f := lookup(name, ownIdx, claudeIdx)
		if f == nil {
			return nil, fmt.Errorf("unknown flag %s; see the Claude Code flags in --help", name)
		}
		isOwn := ownIdx[name] == f
		out := []string{a}
		var vals []string
		switch f.Arity {
		case NoValue:
			if hasValue {
				return nil, fmt.Errorf("%s takes no value", name)
			}
		case RequiredValue:
			if !hasValue {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("%s needs a value %s", name, f.Value)
				}
				i++
				value = args[i]
				out = append(out, value)
			}
			vals = []string{value}
		case OptionalValue:
			if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
				value, hasValue = args[i], true
				out = append(out, value)
			}
			if hasValue {
				vals = []string{value}
			}
		case Variadic:
			if hasValue {
				vals = append(vals, value)
			}
			for i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
				vals = append(vals, args[i])
				out = append(out, args[i])
			}
			if len(vals) == 0 {
				return nil, fmt.Errorf("%s needs at least one value %s", name, f.Value)
			}
			if i == len(args)-1 {
				p.TrailingVariadic = name
			}
		}
		if isOwn {
			p.Own[f.Long] = append(p.Own[f.Long], vals...)
			if len(vals) == 0 {
				p.Own[f.Long] = append(p.Own[f.Long], "")
			}
			continue
		}
		p.Given[f.Long] = true
		p.Claude = append(p.Claude, out...)
	}
	return p, nil
}

func lookup(name string, own, claude map[string]*Flag) *Flag {
	if f := own[name]; f != nil {
		return f
	}
	return claude[name]
}

// FlagByName finds one of Claude Code's options by any of its names.
func FlagByName(name string) (Flag, bool) {
	f := index(Flags)[name]
	if f == nil {
		return Flag{}, false
	}
	return *f, true
}

// isLetters tells whether s could be bundled short options (-vc): ASCII
// letters only. Anything else cannot expand into known flags, and
// expanding it again and again would never end.
func isLetters(s string) bool {
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}
