package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strconv"

	"github.com/coworkhq/cowork/internal/smallfile"
)

// The chain makes the log tamper-evident. Each line ends with its place
// in the log and a MAC, after the record's own fields:
//
//	{...the record...,"prev":"<64 hex>","seq":N,"mac":"<64 hex>"}
//
// seq counts the records from 1, across rotations and restarts. mac is
// HMAC-SHA256 under the instance's key (audit.key, on the host only) of
// the previous record's mac, as its 64 hex digits (64 zeros before seq
// 1), followed by the line's bytes up to ,"mac":. So no line can be
// changed, dropped, moved or added without the key and without the next
// line's mac showing it. "prev" repeats the previous mac on the first line
// of each file (and on seq 1): the oldest file left after rotation can
// then be checked from its first line. "cut", on the record after a write
// that failed part way (a full disk), is the length of the line that
// write left: verify then tells that line from one added by hand. The
// chain's fields come last and in a fixed shape so that a verifier slices
// them off the line's end without parsing its JSON, and the MAC covers
// exactly the bytes written:
//
//	{...the record...[,"cut":N][,"prev":"<64 hex>"],"seq":N,"mac":"<64 hex>"}
//
// No field of a record is named cut, prev, seq or mac, and a record's
// strings cannot hold a bare '"': what precedes its closing brace is
// always one of its own values, never text shaped as a chain field.
const (
	macField  = `,"mac":"`
	prevField = `,"prev":"`
	seqField  = `,"seq":`
	cutField  = `,"cut":`
	macHex    = 2 * sha256.Size
	macTail   = len(macField) + macHex + len(`"}`) // ,"mac":"<hex>"}
	prevLen   = len(prevField) + macHex + len(`"`) // ,"prev":"<hex>"
	maxSeqLen = 19                                 // digits of an int64
	// chainMax is the most the chain's fields add to a record's JSON,
	// the line's '\n' included.
	chainMax = len(cutField) + maxSeqLen + prevLen + len(seqField) + maxSeqLen + macTail + 1
)

// zeroMAC is what seq 1 chains from.
var zeroMAC = [macHex]byte(bytes.Repeat([]byte("0"), macHex))

// link is what a chained line says of its place in the chain. Its slices
// point into the line.
type link struct {
	seq  int64
	mac  []byte // macHex hex digits
	prev []byte // macHex hex digits, or nil: the line has no "prev"
	cut  int64  // "cut": the length of the line a cut write left before it; 0 for none
	body []byte // what the mac covers, after the previous mac
}

// parseLink reads a line's chain fields off its end (the line without its
// '\n'), without parsing its JSON; ok is false for a line that does not
// end as a chained one does: written before the chain, cut short, or
// damaged.
func parseLink(line []byte) (l link, ok bool) {
	n := len(line)
	if n < macTail+len(seqField)+2 || line[n-2] != '"' || line[n-1] != '}' ||
		string(line[n-macTail:n-macTail+len(macField)]) != macField {
		return l, false
	}
	l.mac = line[n-macTail+len(macField) : n-2]
	l.body = line[:n-macTail]
	i := len(l.body)
	for i > 0 && len(l.body)-i < maxSeqLen && l.body[i-1] >= '0' && l.body[i-1] <= '9' {
		i--
	}
	if i == len(l.body) || i < len(seqField) || string(l.body[i-len(seqField):i]) != seqField {
		return l, false
	}
	seq, err := strconv.ParseInt(string(l.body[i:]), 10, 64)
	if err != nil || seq < 1 {
		return l, false
	}
	l.seq = seq
	end := i - len(seqField) // where the fields before seq end
	if p := end - prevLen; p >= 0 && string(l.body[p:p+len(prevField)]) == prevField && l.body[p+prevLen-1] == '"' {
		l.prev = l.body[p+len(prevField) : p+prevLen-1]
		end = p
	}
	if end > 0 && l.body[end-1] >= '0' && l.body[end-1] <= '9' {
		j := end
		for j > 0 && end-j < maxSeqLen && l.body[j-1] >= '0' && l.body[j-1] <= '9' {
			j--
		}
		if j >= len(cutField) && string(l.body[j-len(cutField):j]) == cutField {
			l.cut, _ = strconv.ParseInt(string(l.body[j:end]), 10, 64)
		}
	}
	return l, true
}

// macer makes the macs of lines, reusing its buffer: a line's check
// allocates nothing.
type macer struct {
	h   hash.Hash
	sum []byte
}

func newMacer(key []byte) *macer {
	return &macer{h: hmac.New(sha256.New, key), sum: make([]byte, 0, sha256.Size)}
}

// mac puts in out the mac a line's body should carry after prev, as hex.
func (m *macer) mac(prev, body []byte, out *[macHex]byte) {
	m.h.Reset()
	m.h.Write(prev)
	m.h.Write(body)
	m.sum = m.h.Sum(m.sum[:0])
	hex.Encode(out[:], m.sum)
}

// keyLen is the size of an instance's audit key.
const keyLen = 32

// readKey reads the instance's audit key: 64 hex digits.
func readKey(path string) ([]byte, error) {
	b, err := smallfile.Read(path)
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(key) != keyLen {
		return nil, fmt.Errorf("%s is not an audit key (%d hex digits); restore it from a backup, or move it away to start a new chain (audit verify then reports the records it chained)", path, 2*keyLen)
	}
	return key, nil
}

// loadOrMakeKey reads the key at path, or makes one (0600) when there is
// none. The new key is linked into place, never renamed over it: two
// processes making one at once end up with the same key, the first.
func loadOrMakeKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if !errors.Is(err, os.ErrNotExist) {
		return key, err
	}
	key = make([]byte, keyLen)
	rand.Read(key)
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, fmt.Errorf("make the audit key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if errors.Is(err, os.ErrExist) {
		return readKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("make the audit key: %w", err)
	}
	return key, nil
}

// head is the anchor: the last record the writer knows it wrote, and
// what verify needs to judge the files. The log alone cannot show that
// lines were cut from its end; a log that ends before the anchor's seq
// can. The tag, under the key, keeps anyone without it from writing an
// anchor that matches a shortened log (the macs in the log are no
// secret).
type head struct {
	Seq int64  `json:"seq"`
	MAC string `json:"mac"`
	// FileSeq is the first record of the newest file (Seq+1 when it held
	// none yet): files shifted by hand, as a rotation would, show.
	FileSeq int64 `json:"file_seq"`
	// MaxSize and Keep are how the writer rotates the log: every rotated
	// file is full, which verify checks.
	MaxSize int64  `json:"max_size"`
	Keep    int    `json:"keep"`
	Tag     string `json:"tag"`
}

// headTag is a head's tag. Its input starts with a letter that is no hex
// digit, so it is never a line's mac input (which starts with one).
func headTag(key []byte, h *head) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "cowork audit head 2\n%d\n%s\n%d\n%d\n%d", h.Seq, h.MAC, h.FileSeq, h.MaxSize, h.Keep)
	return hex.EncodeToString(m.Sum(nil))
}

func writeHead(path string, key []byte, h head) error {
	h.Tag = headTag(key, &h)
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return smallfile.WriteAtomic(path, append(b, '\n'), 0o600)
}

// errBadHead is a head whose tag does not match the key.
var errBadHead = errors.New("its tag does not match the key: it was written without the key")

// readHead reads the anchor at path and checks its tag.
func readHead(path string, key []byte) (*head, error) {
	b, err := smallfile.Read(path)
	if err != nil {
		return nil, err
	}
	var h head
	if err := json.Unmarshal(b, &h); err != nil || len(h.MAC) != macHex {
		return nil, errBadHead
	}
	if !hmac.Equal([]byte(h.Tag), []byte(headTag(key, &h))) {
		return nil, errBadHead
	}
	return &h, nil
}
