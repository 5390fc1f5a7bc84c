// Package agentbin holds the guest agents embedded in the daemon binary,
// which installs them into each guest so that the agent always matches the
// host that talks to it. `make` copies them into files/.
package agentbin

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/coworkhq/cowork/internal/hostdwire"
)

//go:embed files
var agentFS embed.FS

const agentPrefix = "cowork-agent-linux-"

// Agent returns the embedded agent for a guest architecture (GOARCH).
func Agent(arch string) ([]byte, error) {
	b, err := agentFS.ReadFile("files/" + agentPrefix + arch)
	if err != nil {
		return nil, fmt.Errorf("no agent for linux/%s in this build of cowork; build it with `make`", arch)
	}
	return b, nil
}

// Sum is the hex sha256 of the embedded agent for arch, from the
// SHA256SUMS the build wrote: it costs no read of the agent itself, whose
// pages would then stay in the daemon's memory.
func Sum(arch string) (string, error) {
	if sum := embeddedSums()[agentPrefix+arch]; sum != "" {
		return sum, nil
	}
	b, err := Agent(arch)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// Agents lists the embedded agents, sorted by architecture. The digests
// come from the SHA256SUMS the build wrote, so listing costs no hashing.
func Agents() []hostdwire.Agent {
	sums := embeddedSums()
	entries, _ := fs.ReadDir(agentFS, "files")
	var out []hostdwire.Agent
	for _, e := range entries {
		arch, ok := strings.CutPrefix(e.Name(), agentPrefix)
		if !ok {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		sum := sums[e.Name()]
		if sum == "" {
			b, _ := Agent(arch)
			h := sha256.Sum256(b)
			sum = hex.EncodeToString(h[:])
		}
		out = append(out, hostdwire.Agent{Arch: arch, Size: int(info.Size()), SHA256: sum})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Arch < out[j].Arch })
	return out
}

// embeddedSums reads files/SHA256SUMS (sha256sum's format) if the
// build made one.
func embeddedSums() map[string]string {
	b, err := agentFS.ReadFile("files/SHA256SUMS")
	if err != nil {
		return nil
	}
	sums := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			sums[strings.TrimPrefix(f[1], "*")] = f[0]
		}
	}
	return sums
}
