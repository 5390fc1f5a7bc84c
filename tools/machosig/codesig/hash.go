package codesig

import (
	"crypto/sha1" //nolint:gosec // CS_HASHTYPE_SHA1 is part of the format; we only compare.
	"crypto/sha256"
	"crypto/sha512"
	"hash"
)

// hashSizeOf is the slot size for a CS_HASHTYPE_*, or 0 if unknown.
func hashSizeOf(t uint8) int {
	switch t {
	case hashSHA1, hashSHA256Trunc:
		return 20
	case hashSHA256:
		return 32
	case hashSHA384:
		return 48
	}
	return 0
}

// hashName is the name the summary prints for a hash type.
func hashName(t uint8) string {
	switch t {
	case hashSHA1:
		return "SHA-1"
	case hashSHA256:
		return "SHA-256"
	case hashSHA256Trunc:
		return "SHA-256/20"
	case hashSHA384:
		return "SHA-384"
	}
	return "unknown"
}

// digest hashes data with hash type t, truncated to the slot size (only
// SHA-256/20 truncates).
func digest(t uint8, data []byte) []byte {
	var h hash.Hash
	switch t {
	case hashSHA1:
		h = sha1.New() //nolint:gosec
	case hashSHA256, hashSHA256Trunc:
		h = sha256.New()
	case hashSHA384:
		h = sha512.New384()
	default:
		return nil
	}
	h.Write(data)
	return h.Sum(nil)[:hashSizeOf(t)]
}
