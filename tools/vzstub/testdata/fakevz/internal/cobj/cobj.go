// Package cobj stands in for vz's internal/objc.
package cobj

/*
#include <stdlib.h>
static const char *uuid(void) { return "x"; }
*/
import "C"

import "unsafe"

// Pointer wraps a C pointer.
type Pointer struct{ p unsafe.Pointer }

// UUID returns a C string.
func UUID() *C.char { return C.uuid() }
