package guestagent

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// unitRE is a unit name the start_units call takes: a plain name of a
// service, socket or target, never a path or something systemctl would
// read as an option.
var unitRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9@_.:-]{0,95}\.(service|socket|target)$`)

// startUnits starts units and returns once systemd has them up (or one
// failed, or ctx ended). What systemctl said on failure goes back, cut
// short: the host shows it in a note.
func (s *Server) startUnits(ctx context.Context, units []string) error {
	const method = string(agentcall.MethodStartUnits)
	if len(units) == 0 || len(units) > agentcall.MaxUnits {
		return refusef(agentcall.KindInvalid, "%s: %d units: want 1 to %d", method, len(units), agentcall.MaxUnits)
	}
	for _, u := range units {
		if !unitRE.MatchString(u) {
			return refusef(agentcall.KindInvalid, "%s: %s is not a unit name, like docker.service", method, quoteShort(u))
		}
	}
	prog := s.opts.Systemctl
	if prog == "" {
		prog = "systemctl"
	}
	cmd := exec.CommandContext(ctx, prog, append([]string{"start", "--no-ask-password", "--"}, units...)...)
	cmd.WaitDelay = 2 * time.Second // a child left holding its output ends no wait
	out, err := cmd.CombinedOutput()
	if err != nil {
		said := strings.TrimSpace(string(out))
		if len(said) > 300 {
			said = said[:300] + "..."
		}
		return refusef(agentcall.KindFailed, "systemctl start %s: %v: %s", strings.Join(units, " "), err, said)
	}
	return nil
}
