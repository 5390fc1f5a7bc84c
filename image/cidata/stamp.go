package cidata

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strings"
)

// stampSuffix names the file beside the ISO that records what it was
// made from: the inputs' digest and the ISO's size.
const stampSuffix = ".stamp"

// stamp digests what goes on the ISO: each file's name and contents, and
// the agent by its sha256 (so that a new build's agent makes a new ISO).
func stamp(files map[string][]byte, agentSum string) string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(files[n]))
		h.Write(files[n])
	}
	fmt.Fprintf(h, "agent\x00%s", agentSum)
	return hex.EncodeToString(h.Sum(nil))
}

// upToDate is whether the ISO at path was made from the inputs whose
// stamp is want, and still has the size it was written with (a truncated
// or replaced ISO is written again).
func upToDate(path, want string) bool {
	b, err := os.ReadFile(path + stampSuffix)
	if err != nil {
		return false
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	return strings.TrimSpace(string(b)) == fmt.Sprintf("%s %d", want, fi.Size())
}

// writeStamp records that the ISO at path was made from want.
func writeStamp(path, want string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path+stampSuffix, fmt.Appendf(nil, "%s %d\n", want, fi.Size()), 0o600)
}
