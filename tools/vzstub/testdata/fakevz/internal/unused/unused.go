// Package unused is not imported by the root package, so it is not stubbed.
package unused

// Unused is never stubbed.
func Unused() {}
