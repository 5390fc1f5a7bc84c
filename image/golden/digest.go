package golden

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"sort"
	"syscall"

	"github.com/coworkhq/cowork/hostd/instance"
)

// Digests caches files' sha256 in a JSON file, keyed by path and checked
// against the file's identity (device, inode, size, change time): a key
// needs the image's digest at every init, and hashing a cloud image takes
// seconds.
type Digests struct{ Path string }

type digestEntry struct {
	Dev, Ino, Size, Ctime int64
	SHA256                string
	Used                  int64 // an order for evicting the least recently used
}

// maxDigests bounds the cache file.
const maxDigests = 128

// Of returns the hex sha256 of the file at path.
func (d Digests) Of(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	id := digestEntry{Size: st.Size()}
	if sys != nil {
		id.Dev, id.Ino = int64(sys.Dev), int64(sys.Ino)
		id.Ctime = ctime(sys)
	}
	cache := d.load()
	if e, ok := cache[path]; ok && sys != nil && e.Dev == id.Dev && e.Ino == id.Ino && e.Size == id.Size && e.Ctime == id.Ctime && ValidKey(e.SHA256) {
		if e.Used < newestUse(cache) {
			d.store(cache, path, e) // now the most recently used
		}
		return e.SHA256, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if sys != nil && d.Path != "" {
		id.SHA256 = sum
		d.store(cache, path, id)
	}
	return sum, nil
}

func (d Digests) load() map[string]digestEntry {
	m := map[string]digestEntry{}
	if d.Path == "" {
		return m
	}
	// A cache grown past 1 MiB (it holds 128 entries of ~150 bytes) is
	// not read: a rehash costs less than reading whatever is there.
	if st, err := os.Stat(d.Path); err != nil || !st.Mode().IsRegular() || st.Size() > 1<<20 {
		return m
	}
	if b, err := os.ReadFile(d.Path); err == nil {
		_ = json.Unmarshal(b, &m)
	}
	return m
}

// store adds e and writes the cache, the oldest entries dropped beyond
// maxDigests. A cache that cannot be written costs a rehash, no more.
func (d Digests) store(m map[string]digestEntry, path string, e digestEntry) {
	e.Used = newestUse(m) + 1
	m[path] = e
	if len(m) > maxDigests {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return m[keys[i]].Used < m[keys[j]].Used })
		for _, k := range keys[:len(m)-maxDigests] {
			delete(m, k)
		}
	}
	if b, err := json.Marshal(m); err == nil {
		_ = instance.WriteFileAtomic(d.Path, b, 0o600)
	}
}

func newestUse(m map[string]digestEntry) int64 {
	var newest int64
	for _, v := range m {
		newest = max(newest, v.Used)
	}
	return newest
}
