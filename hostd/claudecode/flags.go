// Package claudecode runs Claude Code in the guest: it knows the pinned
// version's command-line options (to accept and forward every one of
// them), builds the command that runs it, and reads its stream-json output.
package claudecode

import (
	"bufio"
	"fmt"
	"regexp"
	"strings"
	"sync"
)

// Version is the Claude Code release cowork is built and tested against.
const Version = "2.1.332"

// Arity is how many values an option takes, as Claude Code's option parser
// (commander) reads them.
type Arity int

const (
	NoValue       Arity = iota // --verbose
	RequiredValue              // --model <model>: the next argument, whatever it is
	OptionalValue              // --debug [filter]: the next argument unless it starts with '-'
	Variadic                   // --add-dir <dirs...>: every following argument up to the next option
)

func (a Arity) String() string {
	return [...]string{"none", "required", "optional", "variadic"}[a]
}

// Flag is one of Claude Code's options.
type Flag struct {
	Long    string   // "--allowed-tools"
	Aliases []string // other long names: "--allowedTools"
	Short   string   // "-c", or ""
	Arity   Arity
	Value   string // the placeholder: "<tools...>"
	Help    string // the first line of its description
}

// Names are every spelling of the flag.
func (f Flag) Names() []string {
	names := append([]string{f.Long}, f.Aliases...)
	if f.Short != "" {
		names = append(names, f.Short)
	}
	return names
}

// Usage is the flag as `claude --help` shows it.
func (f Flag) Usage() string {
	var b strings.Builder
	if f.Short != "" {
		b.WriteString(f.Short + ", ")
	}
	b.WriteString(strings.Join(append(append([]string(nil), f.Aliases...), f.Long), ", "))
	if f.Value != "" {
		b.WriteString(" " + f.Value)
	}
	return b.String()
}

// Compiled on first use: every CLI start links this package, and a regexp
// compiled at init is paid by each `cowork` run, not only by the one
// parsing help text.
var (
	optionLine  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^  (-[^ ].*?)(?:\s{2,}(.*))?$`) })
	placeholder = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(<[^>]+>|\[[^\]]+\])$`) })
)

// ParseHelp reads the options of `claude --help`. It keeps the spelling of
// each name as printed, so the table it makes can be compared with the one
// cowork carries.
func ParseHelp(help string) ([]Flag, error) {
	var flags []Flag
	inOptions := false
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Options:"):
			inOptions = true
			continue
		case line != "" && !strings.HasPrefix(line, " "):
			inOptions = false // the next section (Commands:)
			continue
		}
		if !inOptions {
			continue
		}
		m := optionLine().FindStringSubmatch(line)
		if m == nil {
			// A description wrapped onto the next lines.
			if len(flags) > 0 && strings.TrimSpace(line) != "" {
				f := &flags[len(flags)-1]
				f.Help = strings.TrimSpace(f.Help + " " + strings.TrimSpace(line))
			}
			continue
		}
		f, err := parseSpec(m[1])
		if err != nil {
			return nil, fmt.Errorf("claude --help: %q: %w", line, err)
		}
		f.Help = strings.TrimSpace(m[2])
		flags = append(flags, f)
	}
	if len(flags) == 0 {
		return nil, fmt.Errorf("claude --help: no options found")
	}
	return flags, nil
}

// parseSpec reads "-c, --continue", "--allowedTools, --allowed-tools <tools...>".
func parseSpec(spec string) (Flag, error) {
	var f Flag
	fields := strings.Fields(spec)
	if last := fields[len(fields)-1]; placeholder().MatchString(last) {
		f.Value = last
		fields = fields[:len(fields)-1]
		switch {
		case strings.HasSuffix(last, "...>") || strings.HasSuffix(last, "...]"):
			f.Arity = Variadic
		case strings.HasPrefix(last, "<"):
			f.Arity = RequiredValue
		default:
			f.Arity = OptionalValue
		}
	}
	var longs []string
	for _, n := range fields {
		n = strings.TrimSuffix(n, ",")
		switch {
		case strings.HasPrefix(n, "--"):
			longs = append(longs, n)
		case strings.HasPrefix(n, "-") && len(n) == 2:
			f.Short = n
		default:
			return f, fmt.Errorf("unexpected %q", n)
		}
	}
	if len(longs) == 0 {
		return f, fmt.Errorf("no long name")
	}
	// commander prints aliases first and the canonical name last.
	f.Long = longs[len(longs)-1]
	if len(longs) > 1 {
		f.Aliases = longs[:len(longs)-1]
	}
	return f, nil
}
