// Package image prepares what a guest boots from. This file holds the guest
// agents embedded in the host binary, which cowork installs into each guest
// so that the agent always matches the host that talks to it.
package image

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed agentbin
var agentFS embed.FS

const agentPrefix = "cowork-agent-linux-"

// AgentInfo describes one embedded agent binary.
type AgentInfo struct {
	Arch   string `json:"arch"` // GOARCH: arm64 or amd64
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

// Agent returns the embedded agent for a guest architecture (GOARCH).
func Agent(arch string) ([]byte, error) {
	b, err := agentFS.ReadFile("agentbin/" + agentPrefix + arch)
	if err != nil {
		return nil, fmt.Errorf("no agent for linux/%s in this build of cowork; build it with `make`", arch)
	}
	return b, nil
}

// Agents lists the embedded agents, sorted by architecture. The digests
// come from the SHA256SUMS the build wrote, so listing costs no hashing.
func Agents() []AgentInfo {
	sums := embeddedSums()
	entries, _ := fs.ReadDir(agentFS, "agentbin")
	var out []AgentInfo
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
		out = append(out, AgentInfo{Arch: arch, Size: int(info.Size()), SHA256: sum})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Arch < out[j].Arch })
	return out
}

// embeddedSums reads agentbin/SHA256SUMS (sha256sum's format) if the
// build made one.
func embeddedSums() map[string]string {
	b, err := agentFS.ReadFile("agentbin/SHA256SUMS")
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
