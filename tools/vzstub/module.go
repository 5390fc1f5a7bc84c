package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"go/build"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// targetContext selects files the way `go build` does for darwin/arm64 with
// cgo on, which is how vz is built on a Mac.
func targetContext() build.Context {
	ctxt := build.Default
	ctxt.GOOS = "darwin"
	ctxt.GOARCH = "arm64"
	ctxt.CgoEnabled = true
	ctxt.BuildTags = nil
	return ctxt
}

// pkgFiles is one package of the module: its import path, directory, and
// the names of the files that build for the target.
type pkgFiles struct {
	path    string
	rel     string // directory relative to the module root, "." for the root
	dir     string
	files   []string
	imports []string
}

// modulePackages returns the module's root package and, transitively, every
// package of the same module it imports, with the files that build for
// darwin/arm64 (no tests). Other packages of the module (cmd/, example/)
// are left out: cowork cannot import them, and they need not build.
func modulePackages(root string) (modPath string, pkgs []pkgFiles, err error) {
	modPath, err = readModulePath(root)
	if err != nil {
		return "", nil, err
	}
	ctxt := targetContext()
	seen := map[string]bool{}
	queue := []string{modPath}
	for len(queue) > 0 {
		ip := queue[0]
		queue = queue[1:]
		if seen[ip] {
			continue
		}
		seen[ip] = true
		rel := "."
		if ip != modPath {
			rel = strings.TrimPrefix(ip, modPath+"/")
		}
		dir := filepath.Join(root, filepath.FromSlash(rel))
		files, imports, err := matchingFiles(&ctxt, dir)
		if err != nil {
			return "", nil, fmt.Errorf("package %s: %w", ip, err)
		}
		pkgs = append(pkgs, pkgFiles{path: ip, rel: rel, dir: dir, files: files, imports: imports})
		for _, imp := range imports {
			if strings.HasPrefix(imp, modPath+"/") {
				queue = append(queue, imp)
			}
		}
	}
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].path < pkgs[j].path })
	return modPath, pkgs, nil
}

// matchingFiles lists dir's non-test Go files that build for ctxt (file
// name suffixes and //go:build lines) and the paths they import.
func matchingFiles(ctxt *build.Context, dir string) (files, imports []string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	fset := token.NewFileSet()
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		ok, err := ctxt.MatchFile(dir, name)
		if err != nil {
			return nil, nil, fmt.Errorf("matching %s: %w", name, err)
		}
		if !ok {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ImportsOnly)
		if err != nil {
			return nil, nil, err
		}
		files = append(files, name)
		for _, spec := range f.Imports {
			p, _ := strconv.Unquote(spec.Path.Value)
			if !seen[p] {
				seen[p] = true
				imports = append(imports, p)
			}
		}
	}
	if len(files) == 0 {
		return nil, nil, fmt.Errorf("no Go files in %s build for darwin/arm64", dir)
	}
	sort.Strings(imports)
	return files, imports, nil
}

// readModulePath returns the module path declared in dir/go.mod.
func readModulePath(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("reading the module's go.mod: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			p := strings.TrimSpace(rest)
			if uq, err := strconv.Unquote(p); err == nil {
				p = uq
			}
			return p, nil
		}
	}
	return "", fmt.Errorf("no module line in %s", filepath.Join(dir, "go.mod"))
}

// locateModule finds the directory of module at the version the module in
// the current directory requires, downloading it if needed.
func locateModule(module string) (dir, version string, err error) {
	var m struct{ Version, Dir string }
	out, err := goCmd("", nil, "list", "-m", "-json", module)
	if err != nil {
		return "", "", fmt.Errorf("the current module does not seem to require %s (add it with `go get %s@VERSION`): %w", module, module, err)
	}
	if err := json.Unmarshal(out, &m); err != nil {
		return "", "", fmt.Errorf("decoding go list -m %s: %w", module, err)
	}
	if m.Dir != "" {
		return m.Dir, m.Version, nil
	}
	out, err = goCmd("", nil, "mod", "download", "-json", module+"@"+m.Version)
	if err != nil {
		return "", "", err
	}
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		return "", "", fmt.Errorf("go mod download %s@%s gave no directory (%v)", module, m.Version, err)
	}
	return m.Dir, m.Version, nil
}

// goCmd runs the go command in dir with extra environment and returns its
// stdout; a failure carries its stderr. GOWORK=off keeps an outer workspace
// (the check script sets GOWORK) from changing what the stub module sees.
func goCmd(dir string, env []string, args ...string) ([]byte, error) {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GOWORK=off"), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// guessPackageName is the name an unnamed import is used under, guessed
// from its path the way goimports does: the last element, skipping a
// major-version element and a "go-" prefix or ".vN"/"-go" suffix. A wrong
// guess makes the stub fail to build, never silently pass.
func guessPackageName(importPath string) string {
	elems := strings.Split(importPath, "/")
	last := elems[len(elems)-1]
	if len(elems) > 1 && isMajorVersion(last) {
		last = elems[len(elems)-2]
	}
	if i := strings.Index(last, ".v"); i > 0 {
		last = last[:i]
	}
	last = strings.TrimPrefix(last, "go-")
	last = strings.TrimSuffix(last, "-go")
	return strings.NewReplacer("-", "", ".", "").Replace(path.Base(last))
}

func isMajorVersion(s string) bool {
	if len(s) < 2 || s[0] != 'v' {
		return false
	}
	_, err := strconv.Atoi(s[1:])
	return err == nil
}
