//go:build arm64

package vz

import (
	"errors"

	"github.com/Code-Hex/vz/v3"
)

// vz has the framework's save calls on Apple silicon only (saver.go).

func (g *vzGuest) Save(path string) error    { return g.SaveMachineStateToPath(path) }
func (g *vzGuest) Restore(path string) error { return g.RestoreMachineStateFromURL(path) }
func (g *vzGuest) Savable() (bool, error)    { return g.config.ValidateSaveRestoreSupport() }

// saveProbe runs vz's check of the macOS 14 calls through
// NewMacKeyboardConfiguration, a harmless macOS 14 constructor.
func (mac) saveProbe() error {
	_, err := vz.NewMacKeyboardConfiguration()
	if errors.Is(err, vz.ErrBuildTargetOSVersion) {
		return oldSDKError{err}
	}
	return err
}
