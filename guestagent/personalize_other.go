//go:build !linux

package guestagent

// RealPersonalize is nil off Linux: the agent runs in Linux guests only.
func RealPersonalize() *PersonalizeSystem { return nil }
