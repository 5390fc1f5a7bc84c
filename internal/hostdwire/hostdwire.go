// Package hostdwire is the contract between the cowork CLI and the
// cowork-hostd binary beyond the control socket: how the CLI finds the
// binary, the exit codes it reads, and the JSON of the one-shot commands
// (inspect, version, and the image commands fetch, verify and disk) that
// need the daemon's dependencies (go-diskfs, an HTTP client, a qcow2
// reader, the embedded agents), which the CLI does not link.
package hostdwire

// Binary is the daemon's file name; the CLI looks for it next to itself.
const Binary = "cowork-hostd"

// Env names a path to the daemon binary that overrides the lookup.
const Env = "COWORK_HOSTD"

// ExitAlreadyRunning is `cowork-hostd run`'s exit code when another hostd
// holds the instance.
const ExitAlreadyRunning = 3

// ExitUsage is a command line the binary does not understand: a CLI newer
// or older than it.
const ExitUsage = 2

// Inspection is what `cowork-hostd inspect --image P --kernel K` prints:
// what each file given is. A field is empty when its file was not given.
type Inspection struct {
	Image  *ImageFacts  `json:"image,omitempty"`
	Kernel *KernelFacts `json:"kernel,omitempty"`
}

// ImageFacts says whether a file is a disk image cowork can boot from.
type ImageFacts struct {
	Format string `json:"format,omitempty"` // qcow2, raw, ...
	Arch   string `json:"arch,omitempty"`   // GOARCH of its EFI loader; "" when it does not tell
	// Err says why the file is no disk image cowork boots, or could not
	// be read; empty when it is one.
	Err string `json:"err,omitempty"`
}

// KernelFacts is what a kernel's header says.
type KernelFacts struct {
	Arch       string `json:"arch,omitempty"`
	Compressed bool   `json:"compressed,omitempty"`
	Err        string `json:"err,omitempty"`
}

// Version is what `cowork-hostd version` prints.
type Version struct {
	Version  string  `json:"version"`
	Commit   string  `json:"commit"`
	Go       string  `json:"go"`
	Platform string  `json:"platform"`
	Agents   []Agent `json:"agents"`
}

// Agent is one guest agent embedded in the daemon binary.
type Agent struct {
	Arch   string `json:"arch"` // GOARCH: arm64 or amd64
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

// Line is one line of what the image commands (fetch, verify, disk) print
// on stdout: how far a step has got, and, last, the file they made or
// checked. A command that fails prints its error on stderr and exits 1;
// whatever lines it printed before then are progress only.
type Line struct {
	Phase string `json:"phase,omitempty"` // "download", "verify", "convert"
	Done  int64  `json:"done,omitempty"`
	Total int64  `json:"total,omitempty"` // 0 when unknown
	Path  string `json:"path,omitempty"`  // the result: on the last line only
}

// GoldenKey is what `cowork-hostd golden key` prints: the key of the
// golden disk an instance would be cloned from, and whether it exists
// (then Size is its virtual size).
type GoldenKey struct {
	Key   string `json:"key"`
	Found bool   `json:"found"`
	Size  int64  `json:"size,omitempty"`
}

// GoldenResult is what `cowork-hostd golden clone` and `golden capture`
// print: the golden disk's key and the instance's disk format after.
// Existed says a capture found the key published already (by another
// init) and left the instance as it was.
type GoldenResult struct {
	Key     string `json:"key"`
	Format  string `json:"format"`
	Existed bool   `json:"existed,omitempty"`
}

// GoldenDisk is one golden disk as `cowork-hostd golden ls` lists it.
type GoldenDisk struct {
	Key       string   `json:"key"`
	Arch      string   `json:"arch"`
	Image     string   `json:"image"`
	Provision string   `json:"provision"`
	Size      int64    `json:"size"`      // virtual
	Allocated int64    `json:"allocated"` // on the host's disk
	Created   string   `json:"created"`   // RFC 3339
	From      string   `json:"from"`      // the instance it was captured from
	Users     []string `json:"users"`     // instances whose disk is an overlay on it
}
