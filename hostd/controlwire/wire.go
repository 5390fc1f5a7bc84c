// Package controlwire is hostd's control API on $COWORK_HOME/NAME/hostd.sock:
// the messages, their framing, a server and a client. The CLI, the public Go
// package cowork and hostd all speak it, and it uses the standard library
// only: the CLI links no gRPC nor protobuf, which would cost it milliseconds
// at every start (issue 17).
//
// The protocol is one call per connection, in JSON lines a program in any
// language can speak with a Unix socket:
//
//   - the client sends one Request as one line of JSON (at most MaxRequest
//     bytes, within RequestTimeout of connecting) and then keeps its side
//     open: closing it cancels the call (a relay session ends with it);
//   - hostd answers Reply lines. A plain call answers one line; a stream
//     (events, open_session, learn) answers a line per message. The last
//     line of every call has "done": true, or an "error" and its "code";
//     a connection that ends before such a line was cut (hostd exited).
//
// For example:
//
//	→ {"call":"status"}
//	← {"status":{"name":"sandbox","state":"running","ready":true,...},"done":true}
//	→ {"call":"set_policy","policy":{"mode":"open"}}
//	← {"error":"policy: ...","code":"invalid_argument"}
package controlwire

import (
	"encoding/json"
	"fmt"
	"time"
)

// Call names a call of the control API.
type Call string

// The calls.
const (
	// CallStatus answers a Status.
	CallStatus Call = "status"
	// CallStop (Request.Stop) shuts the guest down, or cuts its power,
	// and answers once the VM has stopped; hostd then exits.
	CallStop Call = "stop"
	// CallEvents replays the boot so far as Event lines, then follows it
	// as it happens, until the instance is ready, fails or stops.
	CallEvents Call = "events"
	// CallSetPolicy (Request.Policy) replaces the running guest's network
	// policy; new flows follow it at once. hostd also saves it in the
	// instance's config.
	CallSetPolicy Call = "set_policy"
	// CallOpenSession (Request.OpenSession) hands hostd an API credential
	// for its credential relay and answers, in its first line, the Session
	// a guest process uses instead of it. The session lives as long as the
	// connection: it ends when the client closes it (or dies: its socket
	// closes), when CallCloseSession ends it, when hostd exits, or at its
	// ceiling. hostd then ends the call: done when the session was closed,
	// CodeExpired at its ceiling, CodeUnavailable when hostd exits.
	CallOpenSession Call = "open_session"
	// CallCloseSession (Request.SessionID) ends a session at once: its
	// placeholder has stopped working when the call answers, and its
	// requests in flight are cut. It answers what the session spent
	// (Reply.SessionUsage).
	CallCloseSession Call = "close_session"
	// CallSuspend (Request.Suspend) saves the running guest, memory and
	// devices, into the instance's folder and stops the VM; the next
	// start resumes it where it was. It answers a Suspended once the VM
	// has stopped; hostd then exits. A suspend that fails leaves the
	// guest running as it was.
	CallSuspend Call = "suspend"
	// CallPorts answers the guest ports published on the host (Ports).
	CallPorts Call = "ports"
	// CallPublish (Request.Publish) makes a guest TCP port reachable on
	// the host while the VM runs, and answers it as bound (Ports[0]).
	CallPublish Call = "publish"
	// CallUnpublish (Request.Unpublish: a host address, a host port, or a
	// guest port published once) takes a published port back, cutting
	// its connections, and answers it (Ports[0]).
	CallUnpublish Call = "unpublish"
	// CallAutoPublish (Request.AutoPublish) starts or stops following
	// the guest's listening sockets: while on, hostd publishes on
	// 127.0.0.1 each TCP and UDP port of 1024 and up the guest listens on
	// (Port.Auto), and takes it back when the guest stops.
	CallAutoPublish Call = "auto_publish"
	// CallReloadSecrets has hostd read the instance's secrets again from
	// its config and their stores (`cowork secret set/rm` wrote them), and
	// hand the guest's agent their placeholders; it answers
	// Reply.SecretsReloaded.
	CallReloadSecrets Call = "reload_secrets"
	// CallLearn (Request.Learn) puts the guest network in learn mode and
	// answers, in its first line, a Learning: what the policy refuses
	// only for not being listed is let through and audited with "learn":
	// true; what it refuses on purpose (the host, private addresses, the
	// deny list) stays refused. The mode lives as long as the connection,
	// as a relay session does: it ends when the client closes it (or
	// dies), when hostd exits, or at its ceiling (CodeExpired). It is
	// never saved in the config.
	CallLearn Call = "learn"
	// CallToolCalls (Request.ToolCalls) writes an ask's tool calls, as
	// claude's stream told them, into the audit log (kind "tool"), under
	// the ask's relay session; it answers once they are written.
	CallToolCalls Call = "tool_calls"
	// CallWake runs on a guest hostd holds loaded and paused (`run
	// --standby`: a warm pool clone, restored from its saved state up to
	// the moment before it runs). It answers at once; CallEvents then
	// follows the rest of the resume. On a hostd that is not standing by
	// it is CodeFailedPrecondition.
	CallWake Call = "wake"
)

// MaxPorts bounds the ports a reply lists (hostd publishes no more).
const MaxPorts = 64

// Bounds of what each side reads. A request is small, the policy being
// the largest; a reply line is a Status or one Event, whose texts hostd
// bounds (8 KiB each).
const (
	MaxRequest = 1 << 20
	MaxReply   = 1 << 20
)

// RequestTimeout is how long hostd waits for a request line after it
// accepted a connection; a client that sends nothing is dropped then.
const RequestTimeout = 10 * time.Second

// Request is the one line a client sends: its Call and that call's
// arguments.
type Request struct {
	Call        Call                `json:"call"`
	Stop        *StopRequest        `json:"stop,omitempty"`
	Policy      json.RawMessage     `json:"policy,omitempty"`
	OpenSession *OpenSessionRequest `json:"open_session,omitempty"`
	SessionID   string              `json:"session_id,omitempty"`
	Suspend     *SuspendRequest     `json:"suspend,omitempty"`
	Publish     *PublishRequest     `json:"publish,omitempty"`
	Unpublish   string              `json:"unpublish,omitempty"`
	AutoPublish *bool               `json:"auto_publish,omitempty"`
	Learn       *LearnRequest       `json:"learn,omitempty"`
	ToolCalls   *ToolCallsRequest   `json:"tool_calls,omitempty"`
}

// ToolCallsRequest is an ask's tool calls (CallToolCalls): the relay
// session it ran under, and each call's id, tool and span.
type ToolCallsRequest struct {
	Session string     `json:"session"`
	Calls   []ToolCall `json:"calls"`
}

// ToolCall is one tool call of an ask.
type ToolCall struct {
	ID   string    `json:"id"`
	Name string    `json:"name"`
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Reply is a line hostd sends. A message line carries one of Status,
// Event or Session; the last line of a call has Done, or Error and Code.
type Reply struct {
	Status  *Status  `json:"status,omitempty"`
	Event   *Event   `json:"event,omitempty"`
	Session *Session `json:"session,omitempty"`
	// Suspended is CallSuspend's answer, on its last line.
	Suspended *Suspended `json:"suspended,omitempty"`
	// Ports answers CallPorts, CallPublish and CallUnpublish.
	Ports []Port `json:"ports,omitempty"`
	// Learning is CallLearn's first line.
	Learning *Learning `json:"learning,omitempty"`
	// SecretsReloaded answers CallReloadSecrets.
	SecretsReloaded *SecretsReloaded `json:"secrets_reloaded,omitempty"`
	// SessionUsage answers CallCloseSession.
	SessionUsage *SessionUsage `json:"session_usage,omitempty"`
	Done         bool          `json:"done,omitempty"`
	Error        string        `json:"error,omitempty"`
	Code         Code          `json:"code,omitempty"`
}

// SecretsReloaded is what a reload of the secrets did: Booting, the
// network is not up yet and loads them when it is; LeftOut names each
// secret it could not load, and why (NAME first).
type SecretsReloaded struct {
	Booting bool     `json:"booting,omitempty"`
	LeftOut []string `json:"left_out,omitempty"`
}

// LearnRequest is how long learn mode may last.
type LearnRequest struct {
	// TTLSeconds is its ceiling: it ends this long after it began even
	// if its connection is still open. 0, or more than 8 hours, means 8
	// hours.
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
}

// Learning is learn mode begun: Since is when (its first records are not
// before it, on hostd's clock, this machine's), Until its ceiling.
type Learning struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
}

// StopRequest is how to stop.
type StopRequest struct {
	// Force cuts the power at once instead of asking the guest to shut
	// down.
	Force bool `json:"force,omitempty"`
	// TimeoutMS is how long the guest may take to shut down before its
	// power is cut; 0 means hostd's default.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// SuspendRequest is how to suspend.
type SuspendRequest struct {
	// Force suspends even when guest processes use the share, which QEMU
	// cannot keep attached across a save: they lose /workspace (it is
	// unmounted lazily under them).
	Force bool `json:"force,omitempty"`
}

// PublishRequest is a guest port to publish.
type PublishRequest struct {
	// HostAddr is where to listen, host:port; port 0 takes a free one.
	HostAddr  string `json:"host_addr"`
	GuestPort int    `json:"guest_port"`
	Proto     string `json:"proto,omitempty"` // "udp", or empty (or "tcp") for TCP
}

// Port is a guest TCP or UDP port reachable on the host.
type Port struct {
	HostAddr  string `json:"host_addr"` // as bound
	GuestPort int    `json:"guest_port"`
	Proto     string `json:"proto,omitempty"` // "udp", or empty for TCP
	// Auto says hostd follows it: the guest listens on it
	// (CallAutoPublish).
	Auto bool `json:"auto,omitempty"`
	// Config says it is the instance's config's (init --publish), there
	// at every start; the others last while the VM runs.
	Config bool `json:"config,omitempty"`
}

func (p Port) String() string {
	if p.Proto == "udp" {
		return fmt.Sprintf("%s->%d/udp", p.HostAddr, p.GuestPort)
	}
	return fmt.Sprintf("%s->%d", p.HostAddr, p.GuestPort)
}

// Suspended is a guest saved by CallSuspend.
type Suspended struct {
	// Bytes is what the saved state takes on the host's disk.
	Bytes int64 `json:"bytes"`
	// TookMS is how long the suspend took, from the call to the VM's end.
	TookMS int64 `json:"took_ms"`
}

// OpenSessionRequest is the credential a session hands the relay. It is
// a secret: String and the server's errors never show the key or token.
type OpenSessionRequest struct {
	// Endpoint is the real API endpoint; empty means Anthropic's API.
	Endpoint string `json:"endpoint,omitempty"`
	// Exactly one of APIKey and AuthToken.
	APIKey    string `json:"api_key,omitempty"`
	AuthToken string `json:"auth_token,omitempty"`
	// TTLSeconds is the session's ceiling: it ends this long after it
	// opened even if its connection is still open. 0, or more than 8
	// hours, means 8 hours.
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
	// What names the session in the instance's usage: "ask", "claude".
	What string `json:"what,omitempty"`
	// MaxTokensTotal and MaxCostUSD are the session's budget: the relay
	// refuses its requests once its answers have counted that many tokens
	// (of every kind) or cost that many US dollars at the price table's
	// prices. 0 is no limit.
	MaxTokensTotal int64   `json:"max_tokens_total,omitempty"`
	MaxCostUSD     float64 `json:"max_cost_usd,omitempty"`
}

// String shows which secret the request holds, never the secret itself
// (nor the endpoint, whose URL may carry a password).
func (r OpenSessionRequest) String() string {
	kind := "no credential"
	switch {
	case r.APIKey != "" && r.AuthToken != "":
		kind = "an API key and an auth token"
	case r.APIKey != "":
		kind = "an API key"
	case r.AuthToken != "":
		kind = "an auth token"
	}
	return fmt.Sprintf("session request with %s, ttl %ds, budget %d tokens $%g", kind, r.TTLSeconds, r.MaxTokensTotal, r.MaxCostUSD)
}

// GoString is String, so that %#v does not print the secret either.
func (r OpenSessionRequest) GoString() string { return r.String() }

// SessionUsage is what a session spent through the relay: the Messages
// API calls it made and those its budget refused, their answers' tokens
// (under the API's names; EstimatedTokens were charged for answers whose
// usage could not be read) and their cost in US dollars at the price
// table's prices. Stopped is the refusal's message when its budget (or
// the instance's daily one) stopped it.
type SessionUsage struct {
	Requests                 int64   `json:"requests"`
	Refused                  int64   `json:"refused,omitempty"`
	InputTokens              int64   `json:"input_tokens"`
	OutputTokens             int64   `json:"output_tokens"`
	CacheCreationInputTokens int64   `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64   `json:"cache_read_input_tokens"`
	EstimatedTokens          int64   `json:"estimated_tokens,omitempty"`
	CostUSD                  float64 `json:"cost_usd"`
	Unpriced                 int64   `json:"unpriced,omitempty"`
	Stopped                  string  `json:"stopped,omitempty"`
}

// Tokens is every token the session's answers counted: what a token
// budget counts.
func (u *SessionUsage) Tokens() int64 {
	return u.InputTokens + u.OutputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens + u.EstimatedTokens
}

// Session is what a guest process gets instead of the credential.
type Session struct {
	ID string `json:"id"`
	// Placeholder is what the guest process gets as its API key or token.
	Placeholder string `json:"placeholder"`
	// BaseURL is what it gets as ANTHROPIC_BASE_URL: the relay.
	BaseURL string `json:"base_url"`
	// Expires is when the session reaches its ceiling.
	Expires time.Time `json:"expires"`
}
