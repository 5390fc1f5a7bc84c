package main

import (
	"fmt"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// compareReport is the outcome of compareModules.
type compareReport struct {
	diffs    []string // one line per difference, empty when the surfaces match
	packages int
	entries  int // surface entries compared
	ctyped   int // entries that mention a C type, compared modulo which one
}

// compareModules type-checks the real module source (cgo faked) and the
// stub for darwin/arm64 and compares the surface of every package the stub
// holds: exported consts (with values), vars, funcs, and types with their
// fields, interface methods and method sets. Packages from outside the
// module are read from export data built in env (depsEnv for vz).
func compareModules(realDir, stubDir string, env []string) (*compareReport, error) {
	modPath, realPkgs, err := modulePackages(realDir)
	if err != nil {
		return nil, fmt.Errorf("real module: %w", err)
	}
	stubPkgs, err := samePackages(stubDir, modPath, realPkgs)
	if err != nil {
		return nil, fmt.Errorf("stub module: %w", err)
	}
	cgoFile, err := cgoHandleFile()
	if err != nil {
		return nil, fmt.Errorf("locating runtime/cgo for cgo.Handle: %w", err)
	}
	fset := token.NewFileSet()
	handle, err := parser.ParseFile(fset, cgoFile, nil, parser.ImportsOnly)
	if err != nil {
		return nil, fmt.Errorf("reading runtime/cgo for cgo.Handle: %w", err)
	}
	paths := externalImports(modPath, realPkgs, stubPkgs)
	for _, is := range handle.Imports {
		p, _ := strconv.Unquote(is.Path.Value)
		paths = append(paths, p)
	}
	ext, err := exportImporter(fset, stubDir, paths, env)
	if err != nil {
		return nil, err
	}
	cgo, err := cgoPackage(fset, ext, cgoFile)
	if err != nil {
		return nil, err
	}
	check := func(pkgs []pkgFiles, fakeC bool) (*sourceImporter, error) {
		s := &sourceImporter{fset: fset, modPath: modPath, pkgs: map[string]pkgFiles{}, fakeC: fakeC, ext: ext, cgo: cgo, done: map[string]*types.Package{}}
		for _, p := range pkgs {
			s.pkgs[p.path] = p
		}
		for _, p := range pkgs {
			if _, err := s.check(p.path); err != nil {
				return nil, err
			}
		}
		return s, nil
	}
	realImp, err := check(realPkgs, true)
	if err != nil {
		return nil, fmt.Errorf("type-checking the real module: %w", err)
	}
	stubImp, err := check(stubPkgs, false)
	if err != nil {
		return nil, fmt.Errorf("type-checking the stub: %w", err)
	}
	if len(stubImp.errs) > 0 {
		return nil, fmt.Errorf("the stub does not type-check (%d errors), first: %w", len(stubImp.errs), stubImp.errs[0])
	}
	if len(realImp.errs) > 0 {
		return nil, fmt.Errorf("the real module's declarations do not type-check with faked cgo (%d errors), first: %w", len(realImp.errs), realImp.errs[0])
	}

	rep := &compareReport{}
	realChecked, stubChecked := realImp.checked(), stubImp.checked()
	for _, p := range stubPkgs {
		rs, ss := surface(realChecked[p.path]), surface(stubChecked[p.path])
		rep.packages++
		rep.diffs = append(rep.diffs, diffSurfaces(p.path, rs, ss)...)
		for _, v := range rs {
			rep.entries++
			if strings.Contains(v, invalid) {
				rep.ctyped++
			}
		}
	}
	return rep, nil
}

// samePackages finds, in the stub module at dir, the packages the real
// module has. The stub's own import graph is smaller (imports used only in
// bodies are gone), so it is not walked.
func samePackages(dir, modPath string, realPkgs []pkgFiles) ([]pkgFiles, error) {
	stubPath, err := readModulePath(dir)
	if err != nil {
		return nil, err
	}
	if stubPath != modPath {
		return nil, fmt.Errorf("stub is of module %s, not %s", stubPath, modPath)
	}
	ctxt := targetContext()
	var pkgs []pkgFiles
	for _, p := range realPkgs {
		pdir := filepath.Join(dir, filepath.FromSlash(p.rel))
		files, imports, err := matchingFiles(&ctxt, pdir)
		if err != nil {
			return nil, fmt.Errorf("package %s is missing from the stub: %w", p.path, err)
		}
		pkgs = append(pkgs, pkgFiles{path: p.path, rel: p.rel, dir: pdir, files: files, imports: imports})
	}
	return pkgs, nil
}

// invalid is how go/types prints a type it could not resolve: with
// FakeImportC, that is every C type of the real package.
const invalid = "invalid type"

// cTypeRE matches a stub's C stand-in as the qualifier below prints it,
// with the pointers to it: go/types turns a pointer to an invalid type
// into an invalid type, so the real *C.char is "invalid type" too.
var cTypeRE = regexp.MustCompile(`\**[\w./-]+\.` + cTypePrefix + `\w+`)

// surface lists a package's API as key -> description. Type strings use
// full package paths. C types are compared modulo which C type: the real
// side (FakeImportC) can only say "invalid type", so the stub's
// _Ctype_name is normalised to that too. Only the position of a C type in
// a signature is checked, not which one it is; cgo types are private to
// the package that imports "C", so cowork cannot name them anyway.
func surface(pkg *types.Package) map[string]string {
	m := map[string]string{}
	if pkg == nil {
		return m
	}
	q := func(p *types.Package) string { return p.Path() }
	str := func(t types.Type) string { return cTypeRE.ReplaceAllString(types.TypeString(t, q), invalid) }
	scope := pkg.Scope()
	for _, name := range scope.Names() {
		obj := scope.Lookup(name)
		if !obj.Exported() {
			continue
		}
		switch o := obj.(type) {
		case *types.Const:
			m["const "+name] = str(o.Type()) + " = " + o.Val().ExactString()
		case *types.Var:
			m["var "+name] = str(o.Type())
		case *types.Func:
			m["func "+name] = str(o.Type())
		case *types.TypeName:
			typeSurface(m, o, str)
		}
	}
	return m
}

// typeSurface describes an exported type: what it is, whether it is
// comparable (a map key), its exported fields including promoted ones, an
// interface's methods, and the method sets of T and *T including
// unexported methods, which decide whether a vz type satisfies vz's
// sealed interfaces.
func typeSurface(m map[string]string, tn *types.TypeName, str func(types.Type) string) {
	key := "type " + tn.Name()
	if tn.IsAlias() {
		m[key] = "= " + str(types.Unalias(tn.Type()))
		return
	}
	named, ok := tn.Type().(*types.Named)
	if !ok {
		m[key] = str(tn.Type())
		return
	}
	desc := ""
	if tp := named.TypeParams(); tp.Len() > 0 {
		var ps []string
		for i := range tp.Len() {
			ps = append(ps, tp.At(i).Obj().Name()+" "+str(tp.At(i).Constraint()))
		}
		desc = "[" + strings.Join(ps, ", ") + "] "
	}
	switch u := named.Underlying().(type) {
	case *types.Struct:
		desc += "struct"
		fieldSurface(m, key, "", u, str, 0)
	case *types.Interface:
		desc += "interface"
		for i := range u.NumMethods() {
			f := u.Method(i)
			m[key+" imethod "+f.Id()] = str(f.Type())
		}
	default:
		desc += str(u)
	}
	if types.Comparable(named) {
		desc += " comparable"
	}
	m[key] = desc
	if types.IsInterface(named) {
		return
	}
	valueSet := types.NewMethodSet(named)
	ptrSet := types.NewMethodSet(types.NewPointer(named))
	for i := range ptrSet.Len() {
		sel := ptrSet.At(i)
		recv := "*T"
		if valueSet.Lookup(sel.Obj().Pkg(), sel.Obj().Name()) != nil {
			recv = "T"
		}
		m[key+" method "+sel.Obj().Id()] = str(sel.Obj().Type()) + " on " + recv
	}
}

// fieldSurface records a struct's exported fields and embedded fields, and
// recurses into embedded structs for promoted fields.
func fieldSurface(m map[string]string, key, prefix string, st *types.Struct, str func(types.Type) string, depth int) {
	if depth > 4 {
		return
	}
	for i := range st.NumFields() {
		f := st.Field(i)
		if !f.Exported() && !f.Embedded() {
			continue
		}
		desc := str(f.Type())
		if f.Embedded() {
			desc = "embedded " + desc
		}
		m[key+" field "+prefix+f.Name()] = desc
		if f.Embedded() {
			t := f.Type()
			if p, ok := t.(*types.Pointer); ok {
				t = p.Elem()
			}
			if inner, ok := t.Underlying().(*types.Struct); ok {
				fieldSurface(m, key, prefix+f.Name()+".", inner, str, depth+1)
			}
		}
	}
}

// diffSurfaces lists the entries that differ, sorted.
func diffSurfaces(pkgPath string, real, stub map[string]string) []string {
	keys := map[string]bool{}
	for k := range real {
		keys[k] = true
	}
	for k := range stub {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var diffs []string
	for _, k := range sorted {
		r, inReal := real[k]
		s, inStub := stub[k]
		switch {
		case !inStub:
			diffs = append(diffs, fmt.Sprintf("%s: %s: missing from the stub (real: %s)", pkgPath, k, r))
		case !inReal:
			diffs = append(diffs, fmt.Sprintf("%s: %s: only in the stub (stub: %s)", pkgPath, k, s))
		case r != s:
			diffs = append(diffs, fmt.Sprintf("%s: %s: real %s, stub %s", pkgPath, k, r, s))
		}
	}
	return diffs
}
