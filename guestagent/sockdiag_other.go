//go:build !linux

package guestagent

func dumpSockets(uint8, uint8) ([]diagSocket, error) { return nil, errNotLinux }
