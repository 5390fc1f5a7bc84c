package codesig

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
)

// Entitlements maps each top-level entitlement key to the kind of its value:
// "true" or "false" for booleans, else the value's type ("string", "array",
// "dict", ...). The checks only need to tell a boolean true from anything
// else, and the summary lists the keys.
type Entitlements map[string]string

// parseXMLEntitlements reads the payload of an entitlements blob (0xfade7171):
// an XML property list whose root is a dict. Nested dicts are skipped, so a
// key only counts at the top level, which is where the kernel looks.
func parseXMLEntitlements(payload []byte) (Entitlements, error) {
	d := xml.NewDecoder(bytes.NewReader(payload))
	root, err := nextStart(d)
	if err != nil {
		return nil, fmt.Errorf("entitlements plist: %w", err)
	}
	if root.Name.Local != "plist" {
		return nil, fmt.Errorf("entitlements plist: root element is <%s>, want <plist>", root.Name.Local)
	}
	top, err := nextStart(d)
	if err != nil {
		return nil, fmt.Errorf("entitlements plist: %w", err)
	}
	if top.Name.Local != "dict" {
		return nil, fmt.Errorf("entitlements plist: top-level value is <%s>, want <dict>", top.Name.Local)
	}
	ents := Entitlements{}
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, fmt.Errorf("entitlements plist: unterminated top-level dict: %w", err)
		}
		switch t := tok.(type) {
		case xml.EndElement:
			return ents, nil // </dict>: the decoder has checked it matches
		case xml.StartElement:
			if t.Name.Local != "key" {
				return nil, fmt.Errorf("entitlements plist: <%s> where a <key> was expected", t.Name.Local)
			}
			var key string
			if err := d.DecodeElement(&key, &t); err != nil {
				return nil, fmt.Errorf("entitlements plist: key: %w", err)
			}
			val, err := nextStart(d)
			if err != nil {
				return nil, fmt.Errorf("entitlements plist: value of %q: %w", key, err)
			}
			if val.Name.Local == "key" {
				return nil, fmt.Errorf("entitlements plist: key %q has no value", key)
			}
			if err := d.Skip(); err != nil {
				return nil, fmt.Errorf("entitlements plist: value of %q: %w", key, err)
			}
			if _, dup := ents[key]; dup {
				return nil, fmt.Errorf("entitlements plist: key %q appears twice", key)
			}
			ents[key] = val.Name.Local
		}
	}
}

// nextStart returns the next start element, skipping the XML declaration,
// DOCTYPE, comments and whitespace.
func nextStart(d *xml.Decoder) (xml.StartElement, error) {
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return xml.StartElement{}, io.ErrUnexpectedEOF
		}
		if err != nil {
			return xml.StartElement{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t, nil
		case xml.EndElement:
			return xml.StartElement{}, fmt.Errorf("unexpected </%s>", t.Name.Local)
		}
	}
}

// DER tags used by Apple's DER entitlements (CoreEntitlements): the whole is
// [APPLICATION 16] { INTEGER version, [CONTEXT 16] dict }, and the dict holds
// SEQUENCE { UTF8String key, value } entries.
const (
	derBoolean    = 0x01
	derInteger    = 0x02
	derUTF8String = 0x0c
	derSequence   = 0x30
	derRoot       = 0x70
	derDict       = 0xb0
)

// parseDEREntitlements reads the payload of a DER entitlements blob
// (0xfade7172), which macOS 12 and later may use instead of the XML one.
func parseDEREntitlements(payload []byte) (Entitlements, error) {
	tag, root, rest, err := derNext(payload)
	if err != nil {
		return nil, fmt.Errorf("DER entitlements: %w", err)
	}
	if tag != derRoot || len(rest) != 0 {
		return nil, fmt.Errorf("DER entitlements: root tag %#x with %d trailing bytes, want one %#x", tag, len(rest), derRoot)
	}
	if _, root, err = derTake(root, derInteger, "the version integer"); err != nil {
		return nil, err
	}
	dict, _, err := derTake(root, derDict, "the dictionary")
	if err != nil {
		return nil, err
	}
	ents := Entitlements{}
	for len(dict) > 0 {
		var entry, key []byte
		if entry, dict, err = derTake(dict, derSequence, "a dictionary entry"); err != nil {
			return nil, err
		}
		if key, entry, err = derTake(entry, derUTF8String, "an entry key"); err != nil {
			return nil, err
		}
		vtag, val, entry, err := derNext(entry)
		if err != nil || len(entry) != 0 {
			return nil, fmt.Errorf("DER entitlements: value of %q is malformed (%d trailing bytes): %v", key, len(entry), err)
		}
		if _, dup := ents[string(key)]; dup {
			return nil, fmt.Errorf("DER entitlements: key %q appears twice", key)
		}
		ents[string(key)] = derKind(vtag, val)
	}
	return ents, nil
}

// derTake splits the TLV of tag want, what (for the error), off b.
func derTake(b []byte, want byte, what string) (content, rest []byte, err error) {
	tag, content, rest, err := derNext(b)
	if err == nil && tag != want {
		err = fmt.Errorf("tag %#x, want %#x", tag, want)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("DER entitlements: %s: %w", what, err)
	}
	return content, rest, nil
}

// derKind names a DER value the way Entitlements does.
func derKind(tag byte, val []byte) string {
	switch tag {
	case derBoolean:
		if len(val) == 1 && val[0] == 0xff {
			return "true"
		}
		return "false"
	case derUTF8String:
		return "string"
	case derInteger:
		return "integer"
	case derSequence:
		return "array"
	case derDict:
		return "dict"
	}
	return fmt.Sprintf("tag %#x", tag)
}

// derNext splits one DER TLV off the front of b: its tag, its contents and
// what follows. Only the single-byte tags and definite lengths DER allows.
func derNext(b []byte) (tag byte, content, rest []byte, err error) {
	if len(b) < 2 {
		return 0, nil, nil, errors.New("truncated DER value")
	}
	tag = b[0]
	if tag&0x1f == 0x1f {
		return tag, nil, nil, fmt.Errorf("multi-byte DER tag %#x", tag)
	}
	n, hdr := uint64(b[1]), 2
	if n&0x80 != 0 {
		k := int(n & 0x7f)
		if k == 0 || k > 4 || len(b) < 2+k {
			return tag, nil, nil, fmt.Errorf("bad DER length form %#x", b[1])
		}
		n = 0
		for _, c := range b[2 : 2+k] {
			n = n<<8 | uint64(c)
		}
		hdr += k
	}
	if uint64(len(b)-hdr) < n {
		return tag, nil, nil, fmt.Errorf("DER value of %d bytes overruns the %d left", n, len(b)-hdr)
	}
	return tag, b[hdr : hdr+int(n)], b[hdr+int(n):], nil
}
