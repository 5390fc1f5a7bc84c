package netstack

import (
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"testing"
)

const testPlaceholder = PlaceholderPrefix + "0123456789abcdef0123"

func TestSecretHostKey(t *testing.T) {
	for in, want := range map[string]string{
		"github.com":           "github.com:443",
		"API.GitHub.com.":      "api.github.com:443",
		"registry.test:8443":   "registry.test:8443",
		"localhost:9000":       "localhost:9000",
		"1.2.3.4":              "",
		"[::1]:443":            "",
		"*.github.com":         "",
		"github.com/org":       "",
		"github.com:0":         "",
		"github.com:99999":     "",
		"github..com":          "",
		"intranet":             "",
		"github.com:443:443":   "",
		"user@github.com":      "",
		"github.com\r\nX-A: b": "",
	} {
		got, err := SecretHostKey(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("SecretHostKey(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestSecretCheckRefusesWhatAHeaderCannotCarry(t *testing.T) {
	ok := Secret{Name: "GH_TOKEN", Host: "github.com", Mode: SecretBearer, Placeholder: testPlaceholder, Value: "ghp_xxxxxxxx"}
	if err := ok.check(); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*Secret){
		"a line break in the value":     func(s *Secret) { s.Value = "ghp_x\r\nX-Evil: 1" },
		"an empty value":                func(s *Secret) { s.Value = "" },
		"a huge value":                  func(s *Secret) { s.Value = strings.Repeat("a", maxSecretValue+1) },
		"a value that is a placeholder": func(s *Secret) { s.Value = testPlaceholder },
		"a short value":                 func(s *Secret) { s.Value = "1234567" },
		"PATH":                          func(s *Secret) { s.Name = "PATH" },
		"LD_PRELOAD":                    func(s *Secret) { s.Name = "LD_PRELOAD" },
		"GIT_CONFIG_COUNT":              func(s *Secret) { s.Name = "GIT_CONFIG_COUNT" },
		"NODE_EXTRA_CA_CERTS":           func(s *Secret) { s.Name = "node_extra_ca_certs" },
		"a URL for a host":              func(s *Secret) { s.Host = "https://github.com" },
		"a name with a dash":            func(s *Secret) { s.Name = "GH-TOKEN" },
		"a name with a digit first":     func(s *Secret) { s.Name = "1TOKEN" },
		"a header with bearer":          func(s *Secret) { s.Header = "X-Token" },
		"the Host header":               func(s *Secret) { s.Mode, s.Header = SecretHeader, "host" },
		"Content-Length":                func(s *Secret) { s.Mode, s.Header = SecretHeader, "Content-Length" },
		"no header name":                func(s *Secret) { s.Mode, s.Header = SecretHeader, "X Token" },
		"an unknown mode":               func(s *Secret) { s.Mode = "cookie" },
		"a short placeholder":           func(s *Secret) { s.Placeholder = PlaceholderPrefix + "1" },
		"an address for a host":         func(s *Secret) { s.Host = "140.82.112.3" },
	} {
		s := ok
		change(&s)
		if err := s.check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// The placeholder is replaced in the place its secret names, for its
// host, and nowhere else.
func TestSwapOnlyWhereTheSecretSays(t *testing.T) {
	var n Stack
	other := PlaceholderPrefix + "ffffffffffffffffffff"
	if err := n.SetSecrets([]Secret{
		{Name: "BEARER", Host: "a.test", Mode: SecretBearer, Placeholder: testPlaceholder, Value: "v-bearer"},
		{Name: "OTHER", Host: "b.test", Mode: SecretAuthorization, Placeholder: other, Value: "v-other-value"},
		{Name: "HDR", Host: "a.test", Mode: SecretHeader, Header: "private-token", Placeholder: PlaceholderPrefix + "1111111111111111", Value: "v-hdr-value"},
	}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name         string
		header       http.Header
		wantAuth     string
		used, withld []string
	}{
		{"bearer", http.Header{"Authorization": {"Bearer " + testPlaceholder}}, "Bearer v-bearer", []string{"BEARER"}, nil},
		{"bearer as basic", http.Header{"Authorization": {basicAuth("u", testPlaceholder)}}, basicAuth("u", testPlaceholder), nil, []string{"BEARER"}},
		{"another host's", http.Header{"Authorization": {"Bearer " + other}}, "Bearer " + other, nil, []string{"OTHER"}},
		{"in another header", http.Header{"X-Token": {testPlaceholder}}, "", nil, []string{"BEARER"}},
		{"glued to more", http.Header{"Authorization": {"Bearer " + testPlaceholder + "x"}}, "Bearer " + testPlaceholder + "x", nil, []string{"BEARER"}},
		{"header mode", http.Header{"Private-Token": {PlaceholderPrefix + "1111111111111111"}}, "", []string{"HDR"}, nil},
		// A header of placeholders would grow a thousandfold: not swapped.
		{"header mode, twice", http.Header{"Private-Token": {strings.Repeat(PlaceholderPrefix+"1111111111111111", 2)}}, "", nil, []string{"HDR"}},
	}
	for _, c := range cases {
		h := c.header.Clone()
		used, withheld, _ := n.secrets.swap(h, "a.test:443")
		if h.Get("Authorization") != c.wantAuth || !slices.Equal(used, c.used) || !slices.Equal(withheld, c.withld) {
			t.Errorf("%s: Authorization %q, used %v, withheld %v; want %q, %v, %v", c.name, h.Get("Authorization"), used, withheld, c.wantAuth, c.used, c.withld)
		}
	}
	// For b.test, a's secrets stay placeholders; b's Basic is swapped
	// inside its credentials, the user kept.
	h := http.Header{"Authorization": {basicAuth("x-access-token", other)}, "Private-Token": {PlaceholderPrefix + "1111111111111111"}}
	used, withheld, _ := n.secrets.swap(h, "b.test:443")
	if h.Get("Authorization") != basicAuth("x-access-token", "v-other-value") || !slices.Equal(used, []string{"OTHER"}) || !slices.Equal(withheld, []string{"HDR"}) {
		t.Errorf("b.test: %q, used %v, withheld %v", h.Get("Authorization"), used, withheld)
	}
	// Nothing for a host with no secrets, the port included.
	h = http.Header{"Authorization": {"Bearer " + testPlaceholder}}
	if used, _, _ := n.secrets.swap(h, "a.test:8443"); used != nil || h.Get("Authorization") != "Bearer "+testPlaceholder {
		t.Errorf("a.test:8443 got the secret: %v %q", used, h.Get("Authorization"))
	}
}

func TestSetSecretsRefusesTheWholeList(t *testing.T) {
	var n Stack
	good := Secret{Name: "A", Host: "a.test", Mode: SecretBearer, Placeholder: testPlaceholder, Value: "v-value-a"}
	if err := n.SetSecrets([]Secret{good}); err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.Name = "B" // the same placeholder twice
	if err := n.SetSecrets([]Secret{good, bad}); err == nil {
		t.Fatal("two secrets with one placeholder accepted")
	}
	if !n.secrets.has("a.test:443") || len(n.secrets.all) != 1 {
		t.Fatal("a refused list changed the table")
	}
	many := make([]Secret, MaxSecrets+1)
	if err := n.SetSecrets(many); err == nil {
		t.Fatal("more than MaxSecrets accepted")
	}
}

// Each instance's hostd holds its own secrets: a placeholder another
// instance's guest got (or one made up) is no secret here, even for the
// same name and host.
func TestAnotherInstancesPlaceholderIsNothing(t *testing.T) {
	var a, b Stack
	pa, pb := NewPlaceholder(), NewPlaceholder()
	if pa == pb || !strings.HasPrefix(pa, PlaceholderPrefix) || len(pa) != len(PlaceholderPrefix)+32 {
		t.Fatalf("placeholders %q %q", pa, pb)
	}
	if err := a.SetSecrets([]Secret{{Name: "GH", Host: "github.com", Mode: SecretAuthorization, Placeholder: pa, Value: "value-a-long"}}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetSecrets([]Secret{{Name: "GH", Host: "github.com", Mode: SecretAuthorization, Placeholder: pb, Value: "value-b-long"}}); err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Authorization": {"Bearer " + pa}}
	if used, withheld, _ := b.secrets.swap(h, "github.com:443"); used != nil || withheld != nil || h.Get("Authorization") != "Bearer "+pa {
		t.Fatalf("b swapped a's placeholder: %v %v %q", used, withheld, h.Get("Authorization"))
	}
}

// An answer's header field that quotes what the request carried (the
// value, the Authorization value sent, a Basic credential's base64) goes
// whole; the others stay.
func TestScrubDropsFieldsQuotingTheValue(t *testing.T) {
	var n Stack
	if err := n.SetSecrets([]Secret{{Name: "GH", Host: "a.test", Mode: SecretAuthorization, Placeholder: testPlaceholder, Value: "S3cr3t-Pa55word"}}); err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Authorization": {basicAuth("u", testPlaceholder)}}
	_, _, sent := n.secrets.swap(h, "a.test:443")
	enc := strings.TrimPrefix(h.Get("Authorization"), "Basic ")
	answer := http.Header{
		"X-Echo":       {"Basic " + enc},
		"X-Cred":       {"cred=" + enc},
		"Location":     {"/login?next=/S3cr3t-Pa55word/x"},
		"Content-Type": {"text/plain"},
	}
	scrub(answer, sent)
	if len(answer) != 1 || answer.Get("Content-Type") != "text/plain" {
		t.Fatalf("after scrub: %v", answer)
	}
}
