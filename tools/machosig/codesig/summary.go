package codesig

import (
	"fmt"
	"io"
	"strings"
)

// WriteSummary prints the report for a person reading CI output: what was
// checked and matched, then each problem, then OK or FAIL.
func (r *Report) WriteSummary(w io.Writer, name string) {
	kind := "signed with a certificate"
	switch {
	case r.CDHash == "":
		kind = "no usable signature"
	case r.Adhoc:
		kind = "ad hoc"
	}
	fmt.Fprintf(w, "%s (%s): identifier %q, %s, cdhash %s\n", name, r.Arch, r.Identifier, kind, orNone(r.CDHash))
	for _, d := range r.Directories {
		fmt.Fprintf(w, "  CodeDirectory %#x: %s, %d-byte pages, code limit %d: %d page hashes match\n",
			d.Slot, d.HashType, d.PageSize, d.CodeLimit, d.Pages)
		fmt.Fprintf(w, "    special slots matching their blobs: %s\n", orNone(strings.Join(d.SpecialSlots, ", ")))
	}
	fmt.Fprintf(w, "  entitlements (XML): %s\n", describe(r.Entitlements))
	fmt.Fprintf(w, "  entitlements (DER): %s\n", describe(r.DEREntitlements))
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
	if r.OK() {
		fmt.Fprintln(w, "  OK")
	} else {
		fmt.Fprintf(w, "  FAIL: %d problem(s)\n", len(r.Problems))
	}
}

func describe(e Entitlements) string {
	if e == nil {
		return "absent"
	}
	var parts []string
	for _, k := range e.SortedKeys() {
		parts = append(parts, k+"="+e[k])
	}
	return orNone(strings.Join(parts, ", "))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
