// Package instance knows where an instance's files live: one directory per
// instance under $COWORK_HOME (default ~/.cowork).
package instance

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
)

// DefaultName is the instance commands act on when --name is not given.
const DefaultName = "sandbox"

// nameRE is compiled on first use, not at every CLI start.
var nameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`) })

// CacheDir is the directory in $COWORK_HOME that instances share (images,
// the accelerator probe); no instance may take its name, or deleting that
// instance would take the cache with it.
const CacheDir = "cache"

// ValidateName rejects names that would make awkward directories or
// hostnames, and the name of the shared cache.
func ValidateName(name string) error {
	if !nameRE().MatchString(name) {
		return fmt.Errorf("instance name %q: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit", name)
	}
	if name == CacheDir {
		return fmt.Errorf("instance name %q is where cowork keeps its downloads; pick another name", name)
	}
	return nil
}

// Home is $COWORK_HOME, or ~/.cowork.
func Home() (string, error) {
	if h := os.Getenv("COWORK_HOME"); h != "" {
		return filepath.Abs(h)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find home directory: %w; set COWORK_HOME", err)
	}
	return filepath.Join(home, ".cowork"), nil
}

// PricesFile is $COWORK_HOME/prices.json: the user's rows of the price
// table the relay prices API answers with (see hostd/netstack/usage); it
// need not exist.
func PricesFile() (string, error) {
	h, err := Home()
	return filepath.Join(h, "prices.json"), err
}

// Dir is the instance's directory (which may not exist).
func Dir(name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	h, err := Home()
	if err != nil {
		return "", err
	}
	return filepath.Join(h, name), nil
}

// List returns the names of the instances that exist, sorted.
func List() ([]string, error) {
	h, err := Home()
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(h)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && ValidateName(e.Name()) == nil {
			if _, err := os.Stat(filepath.Join(h, e.Name(), "config.json")); err == nil {
				names = append(names, e.Name())
			}
		}
	}
	sort.Strings(names)
	return names, nil
}
