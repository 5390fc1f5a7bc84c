//go:build !linux

package guestagent

func syncAll() {}

func unmountShare(string, bool) error { return errNotLinux }

func mountVirtiofs(string, string, bool) error { return errNotLinux }
