// Package fakevz is a small cgo package shaped like vz, for vzstub's tests:
// it has everything the generator must handle without needing a Mac.
package fakevz

/*
#include <stdint.h>
#include <stdlib.h>
static int answer(void) { return 42; }
static uintptr_t ident(uintptr_t v) { return v; }
typedef struct { int code; } flat;
*/
import "C"

import (
	"errors"
	"strconv"
	"unsafe"

	"example.com/fakevz/internal/cobj"
)

// Mode is an enum.
type Mode int

const (
	ModeA Mode = iota + 1
	ModeB
)

// ErrNope is an exported variable.
var ErrNope = errors.New("nope")

var answer = func() int { return int(C.answer()) }

var _ Device = (*Thing)(nil)

// Device is sealed: only this package's types implement it.
type Device interface {
	device()
	Name() string
}

type base struct {
	Label string
	ptr   *cobj.Pointer
}

// Thing has C-typed fields and methods with named results.
type Thing struct {
	*base
	Count  int
	handle C.uintptr_t
	flat   *C.flat
}

func init() {
	_ = strconv.Itoa(answer())
}

// NewThing uses strconv only in its body.
func NewThing(name string, mode Mode) (*Thing, error) {
	if mode == 0 {
		return nil, ErrNope
	}
	return &Thing{base: &base{Label: name + strconv.Itoa(int(mode))}}, nil
}

func (*Thing) device() {}

// Name has a named result.
func (t *Thing) Name() (name string) {
	name = t.Label
	return
}

// Ptr exposes an unsafe.Pointer.
func (t Thing) Ptr() unsafe.Pointer { return unsafe.Pointer(t.flat) }

// Raw returns a C type, which cowork could not name.
func (t *Thing) Raw() C.uintptr_t { return C.ident(t.handle) }

// Map is generic.
func Map[T, U any](in []T, f func(T) U) []U {
	out := make([]U, 0, len(in))
	for _, v := range in {
		out = append(out, f(v))
	}
	return out
}

//export fakeCallback
func fakeCallback(code C.int, msg *C.char) C.int {
	return code + C.int(len(C.GoString(msg)))
}
