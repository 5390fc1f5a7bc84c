package rotlog

import "golang.org/x/sys/unix"

// dupOnto makes newfd a copy of oldfd (dup2; Linux on arm64 has only dup3).
func dupOnto(oldfd, newfd int) error { return unix.Dup3(oldfd, newfd, 0) }
