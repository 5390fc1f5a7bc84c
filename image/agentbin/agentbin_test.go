package agentbin

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"os"
	"testing"
)

// requireAgents is set by `make test`, which builds and embeds the agents;
// a bare `go test` without them skips instead of failing.
func requireAgents(t *testing.T, arch string) []byte {
	t.Helper()
	b, err := Agent(arch)
	if err != nil {
		if os.Getenv("COWORK_TEST_REQUIRE_AGENTS") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return b
}

func TestEmbeddedAgentsAreStaticLinuxELF(t *testing.T) {
	for arch, machine := range map[string]elf.Machine{"arm64": elf.EM_AARCH64, "amd64": elf.EM_X86_64} {
		t.Run(arch, func(t *testing.T) {
			f, err := elf.NewFile(bytes.NewReader(requireAgents(t, arch)))
			if err != nil {
				t.Fatalf("not an ELF file: %v", err)
			}
			if f.Machine != machine || f.Class != elf.ELFCLASS64 {
				t.Errorf("machine %v class %v, want %v 64-bit", f.Machine, f.Class, machine)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("has a %v program header: dynamically linked", p.Type)
				}
			}
			if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
				t.Errorf("links against %v", libs)
			}
		})
	}
}

func TestAgentsListsWhatIsEmbedded(t *testing.T) {
	b := requireAgents(t, "arm64")
	sum := sha256.Sum256(b)
	var found bool
	for _, a := range Agents() {
		if a.Arch == "arm64" {
			found = a.Size == len(b) && a.SHA256 == hex.EncodeToString(sum[:])
		}
	}
	if !found {
		t.Fatalf("Agents() = %+v lacks the arm64 agent", Agents())
	}
	if _, err := Agent("riscv64"); err == nil {
		t.Fatal("an agent for an architecture never built")
	}
}
