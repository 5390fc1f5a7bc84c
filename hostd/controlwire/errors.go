package controlwire

import (
	"errors"
	"fmt"
)

// Code is the kind of a call's failure: what the client can do about it.
type Code string

// The codes.
const (
	// CodeInvalidArgument: the request is wrong (a policy that does not
	// compile, a credential the relay refuses, a malformed request); the
	// same request will fail again.
	CodeInvalidArgument Code = "invalid_argument"
	// CodeUnavailable: hostd cannot do it now (the guest network is not up
	// yet, the API endpoint cannot be reached, hostd is exiting or gone).
	CodeUnavailable Code = "unavailable"
	// CodeExpired: a relay session reached its ceiling.
	CodeExpired Code = "expired"
	// CodeUnimplemented: hostd does not know the call (it is older than
	// the client).
	CodeUnimplemented Code = "unimplemented"
	// CodeFailedPrecondition: the instance is not in a state the call
	// can run in (still starting, its share in use); the message says
	// what to change first.
	CodeFailedPrecondition Code = "failed_precondition"
	// CodeNotFound: what the call names is not there (a published port).
	CodeNotFound Code = "not_found"
	// CodeInternal: anything else went wrong in hostd.
	CodeInternal Code = "internal"
)

// The sentinel of each code: errors.Is(err, ErrUnavailable) holds for an
// *Error of CodeUnavailable.
var (
	ErrInvalidArgument = errors.New("invalid argument")
	ErrUnavailable     = errors.New("unavailable")
	ErrExpired         = errors.New("expired")
	ErrUnimplemented   = errors.New("unimplemented")
	ErrInternal        = errors.New("internal error")
	// ErrFailedPrecondition is CodeFailedPrecondition's.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrNotFound is CodeNotFound's.
	ErrNotFound = errors.New("not found")
)

var sentinels = map[Code]error{
	CodeInvalidArgument:    ErrInvalidArgument,
	CodeUnavailable:        ErrUnavailable,
	CodeExpired:            ErrExpired,
	CodeUnimplemented:      ErrUnimplemented,
	CodeInternal:           ErrInternal,
	CodeFailedPrecondition: ErrFailedPrecondition,
	CodeNotFound:           ErrNotFound,
}

// Error is a call's failure, as hostd said it (or as the client saw the
// connection fail). Its message is hostd's own words, which say what to
// do; the code says what kind of failure it is.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return e.Message }

// Is matches the sentinel of e's code.
func (e *Error) Is(target error) bool { return target != nil && sentinels[e.Code] == target }

// Errorf is an *Error of code.
func Errorf(code Code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf is err's code: "" for nil, CodeInternal for an error that is no
// *Error.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// errorReply is the last line of a call that failed.
func errorReply(err error) *Reply {
	var e *Error
	if errors.As(err, &e) {
		return &Reply{Error: e.Message, Code: e.Code}
	}
	return &Reply{Error: err.Error(), Code: CodeInternal}
}

// replyError is the error a reply line carries, nil if none. A code this
// client does not know is kept as it is: it matches no sentinel.
func replyError(r *Reply) error {
	if r.Error == "" && r.Code == "" {
		return nil
	}
	code := r.Code
	if code == "" {
		code = CodeInternal
	}
	return &Error{Code: code, Message: r.Error}
}
