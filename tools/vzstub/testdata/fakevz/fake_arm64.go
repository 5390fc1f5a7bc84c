//go:build darwin && arm64

package fakevz

// ArmOnly exists on darwin/arm64 only.
func ArmOnly() Mode { return ModeB }
