package netstack

import (
	"bytes"
	"encoding/binary"
	"strings"
)

// sniffLimit is how much of a connection's first bytes are kept to find
// the name it is for.
const sniffLimit = 8 << 10

// SniffName finds the host name a connection's first bytes are for: the
// server name of a TLS ClientHello, or the Host header of an HTTP request.
// It never blocks the connection: it looks only at bytes already sent.
func SniffName(b []byte) (name, from string) {
	if n := ParseSNI(b); n != "" {
		return n, "sni"
	}
	if n := ParseHTTPHost(b); n != "" {
		return n, "host"
	}
	return "", ""
}

// ParseSNI returns the server_name of a TLS ClientHello at the start of b,
// or "" when b does not hold one (whole).
func ParseSNI(b []byte) string {
	// TLS record: type 22 (handshake), version, length.
	if len(b) < 5 || b[0] != 22 {
		return ""
	}
	rec := int(binary.BigEndian.Uint16(b[3:5]))
	b = b[5:]
	if len(b) > rec {
		b = b[:rec]
	}
	// Handshake: type 1 (ClientHello), 3-byte length.
	if len(b) < 4 || b[0] != 1 {
		return ""
	}
	hl := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	b = b[4:]
	if len(b) > hl {
		b = b[:hl]
	}
	// version(2) random(32) session_id(1+n) cipher_suites(2+n) compression(1+n)
	if len(b) < 34 {
		return ""
	}
	b = b[34:]
	var ok bool
	if b, ok = skip8(b); !ok {
		return ""
	}
	if b, ok = skip16(b); !ok {
		return ""
	}
	if b, ok = skip8(b); !ok {
		return ""
	}
	if len(b) < 2 {
		return ""
	}
	ext := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) > ext {
		b = b[:ext]
	}
	for len(b) >= 4 {
		typ := binary.BigEndian.Uint16(b)
		l := int(binary.BigEndian.Uint16(b[2:]))
		b = b[4:]
		if len(b) < l {
			return ""
		}
		if typ == 0 { // server_name: list length, then (type, length, name)*
			d := b[:l]
			if len(d) < 2 {
				return ""
			}
			d = d[2:]
			for len(d) >= 3 {
				nt, nl := d[0], int(binary.BigEndian.Uint16(d[1:]))
				d = d[3:]
				if len(d) < nl {
					return ""
				}
				if nt == 0 {
					return cleanName(string(d[:nl]))
				}
				d = d[nl:]
			}
			return ""
		}
		b = b[l:]
	}
	return ""
}

func skip8(b []byte) ([]byte, bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return nil, false
	}
	return b[1+int(b[0]):], true
}

func skip16(b []byte) ([]byte, bool) {
	if len(b) < 2 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return nil, false
	}
	return b[2+n:], true
}

var httpMethods = []string{"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "PATCH ", "OPTIONS ", "CONNECT ", "TRACE "}

// ParseHTTPHost returns the Host header of an HTTP/1 request at the start
// of b, without its port, or "".
func ParseHTTPHost(b []byte) string {
	var method bool
	for _, m := range httpMethods {
		if bytes.HasPrefix(b, []byte(m)) {
			method = true
			break
		}
	}
	if !method {
		return ""
	}
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end >= 0 {
		b = b[:end]
	}
	lines := bytes.Split(b, []byte("\r\n"))
	for _, line := range lines[1:] {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || !strings.EqualFold(string(bytes.TrimSpace(k)), "host") {
			continue
		}
		h := strings.TrimSpace(string(v))
		if i := strings.LastIndexByte(h, ':'); i > 0 && !strings.Contains(h[i:], "]") {
			h = h[:i]
		}
		return cleanName(strings.Trim(h, "[]"))
	}
	return ""
}

// cleanName keeps a sniffed name only if it looks like a host name, so
// that nothing odd reaches the log.
func cleanName(n string) string {
	n = strings.ToLower(strings.TrimSuffix(n, "."))
	if n == "" || len(n) > 253 {
		return ""
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == ':') {
			return ""
		}
	}
	// No empty labels: "..", ".x" or "a..b" name no host (the fuzzer found
	// "..." passing as "..").
	for _, label := range strings.Split(n, ".") {
		if label == "" {
			return ""
		}
	}
	return n
}
