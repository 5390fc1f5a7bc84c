//go:build !linux && !darwin

package reflink

import "errors"

func File(src, dst string) error { return errors.ErrUnsupported }
