package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// depsEnv is the environment the dependencies' export data is built in:
// darwin/arm64 without cgo, as the check builds cowork.
var depsEnv = []string{"GOOS=darwin", "GOARCH=arm64", "CGO_ENABLED=0"}

// exportImporter imports packages outside the vz module (the standard
// library, go-infinity-channel, x/mod) from compiler export data built by
// `go list -export` in env. The real package and the stub share one
// instance, so both see the very same dependency types.
func exportImporter(fset *token.FileSet, moduleDir string, paths, env []string) (types.ImporterFrom, error) {
	exports := map[string]string{}
	if len(paths) > 0 {
		args := append([]string{"list", "-e", "-export", "-deps", "-json=ImportPath,Export,Error"}, paths...)
		out, err := goCmd(moduleDir, env, args...)
		if err != nil {
			return nil, fmt.Errorf("building export data of vz's dependencies: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		for {
			var p struct {
				ImportPath, Export string
				Error              *struct{ Err string }
			}
			if err := dec.Decode(&p); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, fmt.Errorf("decoding go list output: %w", err)
			}
			if p.Error != nil {
				return nil, fmt.Errorf("dependency %s (%s): %s", p.ImportPath, strings.Join(env, " "), p.Error.Err)
			}
			exports[p.ImportPath] = p.Export
		}
	}
	lookup := func(path string) (io.ReadCloser, error) {
		file, ok := exports[path]
		if !ok || file == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(file)
	}
	return importer.ForCompiler(fset, "gc", lookup).(types.ImporterFrom), nil
}

// sourceImporter type-checks the packages of one copy of the vz module
// (real or stub) from source and everything else through ext. For the
// real copy fakeC is set: cgo is faked with types.Config.FakeImportC, which
// declares an empty package C, so every C.name is an invalid type.
type sourceImporter struct {
	fset    *token.FileSet
	modPath string
	pkgs    map[string]pkgFiles // the module's packages, by import path
	fakeC   bool
	ext     types.ImporterFrom
	cgo     *types.Package // runtime/cgo, see cgoPackage
	done    map[string]*types.Package
	errs    []error // type errors outside function bodies
	// bodyErrs counts errors inside function bodies of the real copy:
	// FakeImportC makes C values invalid, and bodies use them; bodies are
	// not part of the surface, so those errors are expected and ignored.
	bodyErrs int
	bodies   []posRange
}

// posRange is the extent of one function body.
type posRange struct{ from, to token.Pos }

func (s *sourceImporter) Import(path string) (*types.Package, error) {
	return s.ImportFrom(path, "", 0)
}

func (s *sourceImporter) ImportFrom(path, dir string, mode types.ImportMode) (*types.Package, error) {
	switch {
	case path == "unsafe":
		return types.Unsafe, nil
	case path == "runtime/cgo":
		return s.cgo, nil
	case path == s.modPath || strings.HasPrefix(path, s.modPath+"/"):
		return s.check(path)
	}
	return s.ext.ImportFrom(path, dir, mode)
}

// check type-checks one package of the module from its files.
func (s *sourceImporter) check(path string) (*types.Package, error) {
	if pkg, ok := s.done[path]; ok {
		if pkg == nil {
			return nil, fmt.Errorf("import cycle through %s", path)
		}
		return pkg, nil
	}
	pf, ok := s.pkgs[path]
	if !ok {
		return nil, fmt.Errorf("package %s is not part of the module copy (not imported by its root package for darwin/arm64)", path)
	}
	s.done[path] = nil
	var files []*ast.File
	for _, name := range pf.files {
		f, err := parser.ParseFile(s.fset, filepath.Join(pf.dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		ast.Inspect(f, func(n ast.Node) bool {
			switch fn := n.(type) {
			case *ast.FuncDecl:
				if fn.Body != nil {
					s.bodies = append(s.bodies, posRange{fn.Body.Pos(), fn.Body.End()})
				}
				return false
			case *ast.FuncLit:
				s.bodies = append(s.bodies, posRange{fn.Body.Pos(), fn.Body.End()})
				return false
			}
			return true
		})
	}
	conf := types.Config{
		Importer:    s,
		FakeImportC: s.fakeC,
		Sizes:       types.SizesFor("gc", "arm64"),
		Error:       s.record,
	}
	pkg, _ := conf.Check(path, s.fset, files, nil) // errors are in s.errs
	s.done[path] = pkg
	return pkg, nil
}

// record keeps a type error, unless it is in a function body of the real
// copy (see bodyErrs).
func (s *sourceImporter) record(err error) {
	if te, ok := err.(types.Error); ok && s.fakeC {
		for _, r := range s.bodies {
			if r.from <= te.Pos && te.Pos < r.to {
				s.bodyErrs++
				return
			}
		}
	}
	s.errs = append(s.errs, err)
}

// checked returns the module's packages checked so far, by path.
func (s *sourceImporter) checked() map[string]*types.Package {
	m := map[string]*types.Package{}
	for p, pkg := range s.done {
		if pkg != nil {
			m[p] = pkg
		}
	}
	return m
}

// cgoHandleFile is runtime/cgo's handle.go in the GOROOT of the go command
// that builds the export data (not the one vzstub was built with).
func cgoHandleFile() (string, error) {
	out, err := goCmd("", nil, "env", "GOROOT")
	if err != nil {
		return "", err
	}
	return filepath.Join(strings.TrimSpace(string(out)), "src", "runtime", "cgo", "handle.go"), nil
}

// cgoPackage type-checks runtime/cgo's handle.go (file, see cgoHandleFile).
// The real vz imports runtime/cgo for cgo.Handle, but that package cannot
// be built without cgo, so it has no darwin export data here; handle.go is
// pure Go and declares everything vz uses.
func cgoPackage(fset *token.FileSet, ext types.Importer, file string) (*types.Package, error) {
	f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, fmt.Errorf("reading runtime/cgo for cgo.Handle: %w", err)
	}
	conf := types.Config{Importer: ext, Sizes: types.SizesFor("gc", "arm64")}
	pkg, err := conf.Check("runtime/cgo", fset, []*ast.File{f}, nil)
	if err != nil {
		return nil, fmt.Errorf("type-checking runtime/cgo's handle.go: %w", err)
	}
	return pkg, nil
}

// externalImports lists the imports of the module copies that come from
// outside the module and need export data.
func externalImports(modPath string, copies ...[]pkgFiles) []string {
	set := map[string]bool{}
	for _, pkgs := range copies {
		for _, p := range pkgs {
			for _, imp := range p.imports {
				if imp == "C" || imp == "unsafe" || imp == "runtime/cgo" || imp == modPath || strings.HasPrefix(imp, modPath+"/") {
					continue
				}
				set[imp] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
