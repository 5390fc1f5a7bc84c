// Package shquote quotes words for a POSIX shell, for the commands cowork
// prints or hands to bash (`cowork exec`'s arguments, the kubectl command
// that finishes a delete).
package shquote

import "strings"

// Quote is s as one word of a POSIX shell: a plain word as it is, else
// single-quoted.
func Quote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
