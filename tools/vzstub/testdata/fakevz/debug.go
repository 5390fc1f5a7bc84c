//go:build darwin && debug

package fakevz

// DebugOnly needs a tag the stub does not set.
func DebugOnly() {}
