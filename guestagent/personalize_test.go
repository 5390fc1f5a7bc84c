package guestagent

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// personalize reseeds first (the machine-id is drawn after), then writes
// the machine-id and the hostname; bad seeds and hostnames change
// nothing, and an agent without a system to change (one on a host, in a
// test) refuses.
func TestCallPersonalize(t *testing.T) {
	var did []string
	sys := &PersonalizeSystem{
		Reseed:       func(seed []byte) error { did = append(did, "reseed"); return nil },
		SetMachineID: func(id string) error { did = append(did, "machine-id "+id); return nil },
		SetHostname:  func(name string) error { did = append(did, "hostname "+name); return nil },
	}
	seed := base64.StdEncoding.EncodeToString(make([]byte, agentcall.SeedSize))
	request := func(seed, host string) string {
		return `{"method":"personalize","seed":"` + seed + `","hostname":"` + host + `"}` + "\n"
	}
	for _, bad := range []string{
		request(base64.StdEncoding.EncodeToString(make([]byte, 63)), "cowork"),
		request("", "cowork"),
		request(seed, "Bad_Host"),
		request(seed, "a;reboot"),
		request(seed, strings.Repeat("a", 64)),
	} {
		reps := ask(t, New(Options{Personalize: sys}), bad)
		if len(reps) != 1 || reps[0].Kind != agentcall.KindInvalid {
			t.Errorf("%.80q: %+v", bad, reps)
		}
	}
	if len(did) != 0 {
		t.Fatalf("a refused call changed %q", did)
	}
	if reps := ask(t, New(Options{}), request(seed, "cowork")); len(reps) != 1 || reps[0].Kind != agentcall.KindFailed {
		t.Errorf("an agent with no system to change: %+v", reps)
	}
	reps := ask(t, New(Options{Personalize: sys}), request(seed, "cowork"))
	if len(reps) != 1 || reps[0].Personalize == nil || len(reps[0].Personalize.MachineID) != 32 {
		t.Fatalf("replies %+v", reps)
	}
	if len(did) != 3 || did[0] != "reseed" || did[1] != "machine-id "+reps[0].Personalize.MachineID || did[2] != "hostname cowork" {
		t.Errorf("did %q", did)
	}
}
