//go:build !linux && !darwin

package savestate

import "errors"

// HostBootID is unknown here: no saved state is ever resumed.
func HostBootID() (string, error) { return "", errors.ErrUnsupported }
