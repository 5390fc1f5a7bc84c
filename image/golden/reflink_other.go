//go:build !linux && !darwin

package golden

import "errors"

func reflinkFile(src, dst string) error { return errors.ErrUnsupported }
