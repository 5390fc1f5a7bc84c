package codesig

import (
	"strings"
	"testing"
)

func TestParseXMLEntitlements(t *testing.T) {
	const head = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">`
	tests := []struct {
		name, doc string
		want      Entitlements
		err       string
	}{
		{"true", head + `<dict><key>a</key><true/></dict></plist>`, Entitlements{"a": "true"}, ""},
		{"mixed", head + `<dict><!-- c --><key>a</key><false/><key>b</key><array><string>x</string></array>
			<key>c</key><dict><key>a</key><true/></dict></dict></plist>`,
			Entitlements{"a": "false", "b": "array", "c": "dict"}, ""},
		{"empty", head + `<dict/></plist>`, Entitlements{}, ""},
		{"duplicate", head + `<dict><key>a</key><true/><key>a</key><false/></dict></plist>`, nil, "appears twice"},
		{"not a dict", head + `<array/></plist>`, nil, "want <dict>"},
		{"not a plist", `<dict/>`, nil, "want <plist>"},
		{"key without value", head + `<dict><key>a</key></dict></plist>`, nil, "value of"},
		{"unterminated", head + `<dict><key>a</key><true/>`, nil, "unterminated"},
		{"value without key", head + `<dict><true/></dict></plist>`, nil, "where a <key>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseXMLEntitlements([]byte(tt.doc))
			checkParse(t, got, err, tt.want, tt.err)
		})
	}
}

// der builds a TLV with a short or long length, for hand-written fixtures
// in the shape Apple documents for DER entitlements.
func der(tag byte, parts ...[]byte) []byte {
	var content []byte
	for _, p := range parts {
		content = append(content, p...)
	}
	n := len(content)
	switch {
	case n < 0x80:
		return append([]byte{tag, byte(n)}, content...)
	case n < 0x100:
		return append([]byte{tag, 0x81, byte(n)}, content...)
	default:
		return append([]byte{tag, 0x82, byte(n >> 8), byte(n)}, content...)
	}
}

func derEntry(key string, value []byte) []byte {
	return der(derSequence, der(derUTF8String, []byte(key)), value)
}

func TestParseDEREntitlements(t *testing.T) {
	version := der(derInteger, []byte{1})
	yes, no := der(derBoolean, []byte{0xff}), der(derBoolean, []byte{0})
	long := strings.Repeat("k", 200)
	tests := []struct {
		name string
		blob []byte
		want Entitlements
		err  string
	}{
		{"empty dict", []byte{0x70, 5, 2, 1, 1, 0xb0, 0}, Entitlements{}, ""},
		{"booleans and kinds", der(derRoot, version, der(derDict,
			derEntry("com.apple.security.virtualization", yes),
			derEntry("f", no),
			derEntry("s", der(derUTF8String, []byte("v"))),
			derEntry("a", der(derSequence)),
			derEntry(long, yes),
		)), Entitlements{"com.apple.security.virtualization": "true", "f": "false", "s": "string", "a": "array", long: "true"}, ""},
		{"wrong root", der(derSequence, version, der(derDict)), nil, "root tag"},
		{"no version", der(derRoot, der(derDict)), nil, "version"},
		{"entry not a sequence", der(derRoot, version, der(derDict, yes)), nil, "dictionary entry"},
		{"key not a string", der(derRoot, version, der(derDict, der(derSequence, yes, yes))), nil, "entry key"},
		{"truncated", der(derRoot, version, der(derDict, derEntry("a", yes)))[:12], nil, "DER entitlements"},
		{"duplicate", der(derRoot, version, der(derDict, derEntry("a", yes), derEntry("a", no))), nil, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDEREntitlements(tt.blob)
			checkParse(t, got, err, tt.want, tt.err)
		})
	}
}

func checkParse(t *testing.T, got Entitlements, err error, want Entitlements, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("err = %v, want one containing %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestParseSuperBlobBounds(t *testing.T) {
	for name, sig := range map[string][]byte{
		"short":          {0xfa, 0xde, 0x0c, 0xc0},
		"wrong magic":    {0xfa, 0xde, 0x0c, 0xc1, 0, 0, 0, 12, 0, 0, 0, 0},
		"long length":    {0xfa, 0xde, 0x0c, 0xc0, 0, 0, 1, 0, 0, 0, 0, 0},
		"index overflow": {0xfa, 0xde, 0x0c, 0xc0, 0, 0, 0, 12, 0xff, 0xff, 0xff, 0xff},
		"blob outside": {0xfa, 0xde, 0x0c, 0xc0, 0, 0, 0, 20, 0, 0, 0, 1,
			0, 0, 0, 0, 0, 0, 0, 16},
	} {
		if _, err := parseSuperBlob(sig); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}
