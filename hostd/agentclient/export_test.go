package agentclient

import "time"

// SetStartedTimeout shortens the wait for started, for a test of an agent
// that never sends it; it returns a function that puts it back.
func SetStartedTimeout(d time.Duration) (restore func()) {
	old := startedTimeout
	startedTimeout = d
	return func() { startedTimeout = old }
}
