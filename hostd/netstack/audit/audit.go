// Package audit is the network audit log: one JSON line per DNS query,
// connection, datagram flow, ping and proxied request of the guest, in
// network.jsonl, rotated by size. The stack writes it; `cowork proxy`
// reads it; `cowork audit verify` checks its chain (chain.go): every
// line carries a MAC under a key kept on the host, linked to the line
// before, so that an edit, a removal or a reordering shows.
package audit

import (
	"strings"
	"time"
)

// Verdicts.
const (
	Allow = "allow"
	Deny  = "deny"
)

// Kinds of record.
const (
	KindDNS     = "dns"
	KindTCP     = "tcp"
	KindUDP     = "udp"
	KindICMP    = "icmp"
	KindHTTP    = "http"    // a plain HTTP request through the proxy
	KindConnect = "connect" // a CONNECT tunnel through the proxy
	KindRelay   = "relay"   // an API call through the credential relay
	KindIP      = "ip"      // a packet of another IP protocol (dropped)

	// KindPublish and KindUnpublish record a guest port made reachable on
	// the host (Dst, the host address; GuestPort) and taken back. They
	// are the host's doing, not flows: Stats does not count them.
	KindPublish   = "publish"
	KindUnpublish = "unpublish"
	// KindRun ends a throwaway run's records in its parent's runs.jsonl
	// (`exec --rm`): what ran, how it ended, what its network did.
	KindRun = "run"
	// KindTool is one of Claude Code's tool calls in an ask (Tool, its
	// Session, Start to Time), as claude's stream told it: the span the
	// ask's flows are set against. Not a flow: Stats does not count it.
	KindTool = "tool"
	// KindGap says how many records (Suppressed) could not be written
	// from Start to Time, while the log's file could not be written (a
	// full disk): the guest's new traffic was refused meanwhile (its
	// verdict), and the lines of flows that ended then are lost. Not a
	// flow.
	KindGap = "gap"
)

// Where a flow's name came from (NameFrom), and where the name the guest
// claimed came from (ClaimedFrom).
const (
	FromDNS   = "dns"   // the DNS answers the guest got from the gateway for the address
	FromProxy = "proxy" // the proxy request's target, resolved by the proxy itself
	FromSNI   = "sni"   // a claim: the TLS ClientHello
	FromHost  = "host"  // a claim: the HTTP Host header
)

// Record is one line of the log.
type Record struct {
	Time     time.Time `json:"time"` // when it ended (flows) or was answered
	Kind     string    `json:"kind"`
	Verdict  string    `json:"verdict"`
	Rule     string    `json:"rule,omitempty"`
	Name     string    `json:"name,omitempty"` // what the flow was decided under: see NameFrom
	NameFrom string    `json:"name_from,omitempty"`

	// Learn marks an allow that only learn mode gave (`cowork policy
	// learn`): the policy does not list the destination, and would have
	// refused it.
	Learn bool `json:"learn,omitempty"`

	// The name the guest's own bytes gave (TLS SNI, HTTP Host), which it
	// can set to anything, unlike Name (a name the guest resolved through
	// the gateway's DNS, or the proxy's own resolution). NameMismatch
	// flags a claim that is none of the names known for the address.
	ClaimedName  string `json:"claimed_name,omitempty"`
	ClaimedFrom  string `json:"claimed_from,omitempty"`
	NameMismatch bool   `json:"name_mismatch,omitempty"`

	Proto int `json:"proto,omitempty"` // the IP protocol number (ip)

	// Flows (tcp, udp, connect, http, relay).
	Start      time.Time `json:"start,omitzero"`
	DurationMs float64   `json:"duration_ms,omitempty"`
	GuestPort  int       `json:"guest_port,omitempty"`
	// Client is the address of a proxy request's client when it is not
	// the guest behind the gateway (Stack.ServeProxyOn): one proxy then
	// serves many, and this says which.
	Client   string `json:"client,omitempty"`
	Dst      string `json:"dst,omitempty"` // ip:port
	BytesOut int64  `json:"bytes_out"`     // guest to the world
	BytesIn  int64  `json:"bytes_in"`      // the world to the guest

	// DNS.
	QType   string   `json:"qtype,omitempty"`
	Answers []string `json:"answers,omitempty"`
	RCode   string   `json:"rcode,omitempty"`

	// HTTP through the proxy or the relay.
	Method  string `json:"method,omitempty"`
	URL     string `json:"url,omitempty"`
	Status  int    `json:"status,omitempty"`
	Session string `json:"session,omitempty"`
	// Usage is what a Messages API answer through the relay cost, as the
	// relay read it from the answer and priced it.
	Usage *Usage `json:"usage,omitempty"`

	// Host-held secrets: TLSTerminated marks a connection (or a request
	// on it) whose TLS the stack ended, to a host it holds secrets for;
	// Secrets names those swapped into the request, SecretsWithheld
	// those whose placeholder the request carried and did not get
	// swapped (another host's, or in another place): it went out as the
	// placeholder.
	TLSTerminated   bool     `json:"tls_terminated,omitempty"`
	Secrets         []string `json:"secrets,omitempty"`
	SecretsWithheld []string `json:"secrets_withheld,omitempty"`

	Error string `json:"error,omitempty"`

	// Owner is the guest process that held the guest's end of the flow or
	// sent the DNS query, as the guest agent names it (hostd asks it about
	// every new flow): a claim of the guest's, never a cause of the
	// verdict. Absent when the agent did not answer in time, or named no
	// process.
	Owner *Owner `json:"owner,omitempty"`
	// Tool is the tool call of a KindTool record.
	Tool *ToolCall `json:"tool,omitempty"`

	// Suppressed, on a summary line of the Throttle, is how many more
	// denials like this one were counted and not logged one by one.
	Suppressed int64 `json:"suppressed,omitempty"`

	// RunID, in a parent's runs.jsonl, names the throwaway run whose
	// clone wrote the record; Run is set on its closing KindRun record.
	RunID string   `json:"run_id,omitempty"`
	Run   *RunInfo `json:"run_info,omitempty"`

	// Clipped says the record was too long for the log (MaxRecord): its
	// long strings were cut short ("..." ends each) and its long lists
	// shortened, so that it fit.
	Clipped bool `json:"clipped,omitempty"`

	// Seq is the record's place in the instance's log, from 1, as the
	// log's chain gives it (chain.go): set by ParseLine, ignored by
	// Write, which numbers the records itself.
	Seq int64 `json:"seq,omitempty"`
}

// Usage is one API answer's tokens, under the API's names, and their
// cost in US dollars at cowork's price table (see hostd/netstack/usage).
// Note says when the count or the price is not the answer's own: no usage
// could be read in it (EstimatedTokens were charged instead), or its model
// is not in the price table.
type Usage struct {
	Model                    string  `json:"model,omitempty"`
	InputTokens              int64   `json:"input_tokens"`
	OutputTokens             int64   `json:"output_tokens"`
	CacheCreationInputTokens int64   `json:"cache_creation_input_tokens,omitempty"`
	CacheReadInputTokens     int64   `json:"cache_read_input_tokens,omitempty"`
	EstimatedTokens          int64   `json:"estimated_tokens,omitempty"`
	CostUSD                  float64 `json:"cost_usd"`
	Note                     string  `json:"note,omitempty"`
}

// ClaimedByGuest is Owner.ClaimedBy: everything in an Owner is what the
// guest says.
const ClaimedByGuest = "guest"

// Owner is a guest process, as the guest agent claims it: its pid, the
// uid of the socket, the exec it belongs to (the COWORK_EXEC of its
// environment, which `cowork proxy --exec` selects by; "" for a process
// that no exec started, such as systemd-resolved), its command name and a
// bounded command line. A guest can put anything in these: they are shown
// escaped, and never decide anything.
type Owner struct {
	Exec      string `json:"exec,omitempty"`
	PID       int    `json:"pid"`
	UID       int64  `json:"uid"`
	Comm      string `json:"comm,omitempty"`
	Cmd       string `json:"cmd,omitempty"`
	ClaimedBy string `json:"claimed_by"`
}

// OfExec says whether the guest claims r's owner is a process of the exec
// whose id is, or begins with, id.
func (r *Record) OfExec(id string) bool {
	return r.Owner != nil && len(r.Owner.Exec) == 16 && strings.HasPrefix(r.Owner.Exec, id)
}

// OfAsk says whether r is of the ask (or claude run) whose id is, or
// begins with, id: an API call or tool call under its relay session (the
// host's own account), or a flow whose owner the guest claims is of its
// exec (an ask's exec is named after its session; see
// cowork.ClaudeOptions).
func (r *Record) OfAsk(id string) bool {
	return len(r.Session) == 16 && strings.HasPrefix(r.Session, id) || r.OfExec(id)
}

// ToolCall is a tool call of Claude Code (KindTool): its id and tool
// name as claude's stream in the guest wrote them, so the guest's claim.
type ToolCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	ClaimedBy string `json:"claimed_by"`
}

// RunInfo is a throwaway run: where it ran, what, how it ended, and what
// its clone's network log held.
type RunInfo struct {
	Instance string `json:"instance"` // the clone, deleted since
	Snapshot string `json:"snapshot"` // the parent's snapshot it was cloned from
	// Ready is how the clone was had: "hot" (running, from the pool),
	// "warm" (suspended, from the pool: resumed) or "cold" (made and
	// booted for the run).
	Ready   string `json:"ready"`
	What    string `json:"what"` // exec or ask
	Command string `json:"command"`
	// ExitCode is the command's; -1 when it did not end with one (the
	// run failed, or was cut short), Error then says why.
	ExitCode int   `json:"exit_code"`
	Stats    Stats `json:"network"`
	// Dropped counts the clone's records not kept: past the cap on what
	// one run may add, or damaged.
	Dropped int64 `json:"dropped,omitempty"`
}

// Stats sums what the log recorded since hostd started, for `cowork status`.
type Stats struct {
	Flows    int64 `json:"flows"`
	Blocked  int64 `json:"blocked"`
	Queries  int64 `json:"dns_queries"`
	BytesOut int64 `json:"bytes_out"`
	BytesIn  int64 `json:"bytes_in"`
}

// Add counts r in s.
func (s *Stats) Add(r *Record) {
	if r.Kind == KindPublish || r.Kind == KindUnpublish || r.Kind == KindTool || r.Kind == KindGap {
		return
	}
	n := int64(1)
	if r.Suppressed > 0 { // a summary stands for the denials it counted
		n = r.Suppressed
	}
	if r.Kind == KindDNS {
		s.Queries += n
	} else {
		s.Flows += n
	}
	if r.Verdict == Deny {
		s.Blocked += n
	}
	s.BytesOut += r.BytesOut
	s.BytesIn += r.BytesIn
}
