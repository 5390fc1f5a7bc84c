package cowork

import (
	"context"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// AuditVerification is what VerifyAudit found: OK when nothing in the
// log shows tampering, else its Problems, each naming a file, a line and
// a seq.
type AuditVerification = audit.Verification

// AuditProblem is one sign of tampering in the network log.
type AuditProblem = audit.Problem

// VerifyAudit checks the chain of the instance's network log
// (network.jsonl and its rotated files) against the instance's audit key
// and anchor: an edited, forged, removed or moved record, a rotated file
// gone from between others or shifted as a rotation would, records cut
// from the log's start or end. It reads files only, so the instance may
// be stopped or running: while it runs (its hostd holds the instance), an
// unfinished last line is left out as the record being written; when it
// is stopped, no one writes, and such a line is a problem. An error means
// the log could not be checked at all (no key, a file that cannot be
// read).
func (i *Instance) VerifyAudit(ctx context.Context) (*AuditVerification, error) {
	if err := i.LocalOnly(OpAuditLog); err != nil {
		return nil, err
	}
	o := i.Paths.Audit()
	o.Live = i.Running()
	return audit.Verify(ctx, i.Paths.NetworkLog(), o)
}
