//go:build !linux && !darwin

package golden

import "syscall"

func ctime(st *syscall.Stat_t) int64 { return 0 }
