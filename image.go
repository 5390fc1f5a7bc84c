package cowork

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

// Progress hears how far a long step is: done of total bytes (total 0
// when unknown).
type Progress interface {
	Update(done, total int64)
}

// Fetch downloads url into dir (a cache folder), checks it against
// sha256 when one is given, and returns the file's path; a file already
// there with that digest is not downloaded again, and an interrupted
// download resumes. phase, when not nil, hands out a Progress for each
// step it reaches ("download", "verify").
//
// The daemon binary does the work (cowork-hostd fetch): the CLI links no
// HTTP client, which would slow every start of it.
func Fetch(ctx context.Context, url, sha256, dir string, phase func(string) Progress) (string, error) {
	args := []string{"fetch", "--url", url, "--dir", dir}
	if sha256 != "" {
		args = append(args, "--sha256", sha256)
	}
	return runImage(ctx, phase, args...)
}

// Verify checks that the file at path has the digest sha256 (hex, with or
// without "sha256:"); p, when not nil, follows the reading.
func Verify(ctx context.Context, path, sha256 string, p Progress) error {
	_, err := runImage(ctx, only(p), "verify", "--file", path, "--sha256", sha256)
	return err
}

// makeDisk has the daemon binary write the instance's disk: a clone of
// the golden disk src.Golden, or a raw disk converted from the image
// src.Image (raw or qcow2), grown to size bytes; convert, when not nil,
// follows the conversion.
func makeDisk(ctx context.Context, convert Progress) instance.MakeDisk {
	return func(src instance.Sources, p instance.Paths, size int64) (string, error) {
		if src.Golden != "" {
			return cloneDisk(ctx, src.Golden, p, size)
		}
		_, err := runImage(ctx, only(convert), "disk", "--from", src.Image, "--to", p.Disk(), "--size", strconv.FormatInt(size, 10))
		return instance.DiskRaw, err
	}
}

// only hands out p for any step.
func only(p Progress) func(string) Progress {
	if p == nil {
		return nil
	}
	return func(string) Progress { return p }
}

// runImage runs an image command of the daemon binary, passing its
// progress on to the Progress of each step, and returns the path its
// last line names.
func runImage(ctx context.Context, phase func(string) Progress, args ...string) (string, error) {
	var result string
	steps := map[string]Progress{}
	_, err := runBinary(ctx, func(b []byte) {
		var line hostdwire.Line
		if json.Unmarshal(b, &line) != nil {
			return
		}
		if line.Path != "" {
			result = line.Path
			return
		}
		if phase == nil || line.Phase == "" {
			return
		}
		p, ok := steps[line.Phase]
		if !ok {
			p = phase(line.Phase)
			steps[line.Phase] = p
		}
		if p != nil {
			p.Update(line.Done, line.Total)
		}
	}, args...)
	return result, err
}
