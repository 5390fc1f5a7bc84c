package netstack

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// scutil --dns on a Mac with a VPN (its resolver for corp.example, on a
// port of its own), /etc/resolver/test and Bonjour's entries.
const scutilOutput = `
DNS configuration

resolver #1
  search domain[0] : home.arpa
  nameserver[0] : 192.168.1.1
  nameserver[1] : fe80::1%en0
  if_index : 6 (en0)
  flags    : Request A records, Request AAAA records
  reach    : 0x00020002 (Reachable,Directly Reachable Address)

resolver #2
  domain   : local
  options  : mdns
  timeout  : 5
  flags    : Request A records, Request AAAA records
  reach    : 0x00000000 (Not Reachable)
  order    : 300000

resolver #3
  domain   : 254.169.in-addr.arpa
  options  : mdns
  timeout  : 5
  order    : 300200

resolver #4
  domain   : Corp.Example.
  nameserver[0] : 10.8.0.53
  nameserver[1] : 10.8.0.54
  port     : 5353
  flags    : Supplemental, Request A records
  reach    : 0x00000003 (Reachable,Transient Connection)
  order    : 102400

resolver #5
  domain   : test
  nameserver[0] : 127.0.0.1
  flags    : Request A records
  reach    : 0x00030002 (Reachable,Local Address,Directly Reachable Address)

DNS configuration (for scoped queries)

resolver #1
  search domain[0] : home.arpa
  nameserver[0] : 192.168.99.99
  if_index : 6 (en0)
  flags    : Scoped, Request A records
`

func TestParseScutilDNS(t *testing.T) {
	def, domains := parseScutilDNS(strings.NewReader(scutilOutput))
	if want := []string{"192.168.1.1:53", "[fe80::1%en0]:53"}; !slices.Equal(def, want) {
		t.Errorf("default resolvers %q, want %q (the scoped section's left out)", def, want)
	}
	if len(domains) != 2 || domains[0].Domain != "corp.example" || !slices.Equal(domains[0].Servers, []string{"10.8.0.53:5353", "10.8.0.54:5353"}) ||
		domains[1].Domain != "test" || !slices.Equal(domains[1].Servers, []string{"127.0.0.1:53"}) {
		t.Errorf("domain resolvers %+v", domains)
	}
}

// Hostile or odd output is bounded: no more than maxServers defaults and
// maxDomainResolvers domains, whatever scutil prints.
func TestParseScutilDNSBounds(t *testing.T) {
	var b strings.Builder
	b.WriteString("DNS configuration\n")
	for i := range 1000 {
		b.WriteString("resolver #1\n  nameserver[0] : 10.0.0." + string(rune('0'+i%10)) + "\n")
		b.WriteString("resolver #2\n  domain : d" + strings.Repeat("x", i%7) + ".example\n  nameserver[0] : 10.1.0.1\n")
	}
	def, domains := parseScutilDNS(strings.NewReader(b.String()))
	if len(def) > maxServers || len(domains) > maxDomainResolvers {
		t.Errorf("%d defaults, %d domains", len(def), len(domains))
	}
}

func TestServersForAName(t *testing.T) {
	_, domains := parseScutilDNS(strings.NewReader(scutilOutput))
	c := &Config{Resolvers: []string{"192.168.1.1:53"}, DomainResolvers: append(domains, DomainResolver{Domain: "eu.corp.example", Servers: []string{"10.9.0.53:53"}})}
	for name, want := range map[string]string{
		"intranet.corp.example.": "10.8.0.53:5353",
		"CORP.EXAMPLE.":          "10.8.0.53:5353",
		"git.eu.corp.example.":   "10.9.0.53:53", // the longest domain wins
		"notcorp.example.":       "192.168.1.1:53",
		// Labels, not strings: a label with an escaped dot is one label.
		`x\.corp.example.`:      "192.168.1.1:53", // a name under "example"
		`a.b\.eu.corp.example.`: "10.8.0.53:5353", // under corp.example, not eu.corp.example
		`corp\046example.`:      "192.168.1.1:53", // one label, "corp.example"
		"api.anthropic.com.":    "192.168.1.1:53",
		"web.test.":             "127.0.0.1:53",
		"":                      "192.168.1.1:53",
	} {
		if got := c.serversFor(name); len(got) == 0 || got[0] != want {
			t.Errorf("%q goes to %v, want %s", name, got, want)
		}
	}
}

func TestResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# comment\nnameserver 1.1.1.1\nsearch x\nnameserver ::1\nnameserver bogus\n"), 0o644)
	if got := resolvConf(p); !slices.Equal(got, []string{"1.1.1.1:53", "[::1]:53"}) {
		t.Errorf("got %q", got)
	}
}
