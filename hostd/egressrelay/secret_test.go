package egressrelay

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coworkhq/cowork/hostd/controlwire"
)

// A pod without its key names the Secret it was deployed with, not the
// default: the fix it gives must be the one that works.
func TestAMissingKeyNamesItsSecret(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "api-key")
	for _, c := range []struct{ secret, want string }{
		{"", "kubectl create secret generic cowork-api-key --from-literal=api-key="},
		{"team-a-key", "kubectl create secret generic team-a-key --from-literal=api-key="},
	} {
		s := &Sessions{KeyFile: missing, Secret: c.secret}
		err := s.OpenSession(context.Background(), controlwire.OpenSessionRequest{}, func(*controlwire.Session) error {
			t.Fatal("a session opened without a key")
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Secret %q: %v, want it to say %q", c.secret, err, c.want)
		}
	}
}

// A session's name is kept printable and short, whoever names it.
func TestClipWhatKeepsANamePrintableAndShort(t *testing.T) {
	if got := ClipWhat("review\x1b]52;c;bad\x07"); strings.ContainsAny(got, "\x1b\x07") {
		t.Errorf("ClipWhat kept a control character: %q", got)
	}
	if got := ClipWhat(strings.Repeat("é", 40)); len(got) > 32 || !utf8.ValidString(got) {
		t.Errorf("ClipWhat of 80 bytes: %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}
