package netstack

import (
	"bufio"
	"context"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DomainResolver answers the queries for Domain and the names under it
// in place of the default resolvers: on a Mac, a VPN's resolver for its
// domains, or one of /etc/resolver/DOMAIN.
type DomainResolver struct {
	Domain  string   // lower case, no trailing dot
	Servers []string // host:port
}

// Bounds of what is taken from the host's DNS configuration.
const (
	maxDomainResolvers = 64
	maxServers         = 8
	maxScutilOutput    = 1 << 20
)

// hostResolvers are the host's resolvers: on macOS what the system
// resolver uses (scutil --dns: the default ones and the per-domain ones,
// which /etc/resolv.conf lacks: VPNs' and /etc/resolver/*), else, or when
// scutil says nothing, /etc/resolv.conf's nameservers.
func hostResolvers() ([]string, []DomainResolver) {
	if runtime.GOOS == "darwin" {
		if def, domains := scutilResolvers(); len(def) > 0 {
			return def, domains
		}
	}
	return resolvConf("/etc/resolv.conf"), nil
}

// scutilResolvers runs scutil --dns, bounded in time and output.
func scutilResolvers() ([]string, []DomainResolver) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/sbin/scutil", "--dns")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil
	}
	if err := cmd.Start(); err != nil {
		return nil, nil
	}
	def, domains := parseScutilDNS(io.LimitReader(out, maxScutilOutput))
	io.Copy(io.Discard, out)
	if cmd.Wait() != nil {
		return nil, nil
	}
	return def, domains
}

// parseScutilDNS reads scutil --dns's first section, the resolvers of
// unscoped queries (the section for scoped queries, bound to one network
// interface each, repeats them): resolvers with no domain are the
// default ones, in order; one with a domain answers for it. mDNS entries
// (.local and the link-local reverse zones) have no nameserver and are
// left out.
func parseScutilDNS(r io.Reader) (def []string, domains []DomainResolver) {
	type entry struct {
		domain  string
		servers []netip.Addr
		port    uint16
	}
	var entries []*entry
	var cur *entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "DNS configuration (") {
			break // the scoped section
		}
		if strings.HasPrefix(line, "resolver #") {
			cur = &entry{port: 53}
			entries = append(entries, cur)
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok || cur == nil {
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch {
		case key == "domain":
			cur.domain = strings.ToLower(strings.TrimSuffix(value, "."))
		case strings.HasPrefix(key, "nameserver["):
			if a, err := netip.ParseAddr(value); err == nil && len(cur.servers) < maxServers {
				cur.servers = append(cur.servers, a)
			}
		case key == "port":
			if p, err := strconv.ParseUint(value, 10, 16); err == nil && p > 0 {
				cur.port = uint16(p)
			}
		}
	}
	for _, e := range entries {
		var servers []string
		for _, a := range e.servers {
			s := netip.AddrPortFrom(a, e.port).String()
			if !slices.Contains(servers, s) {
				servers = append(servers, s)
			}
		}
		switch {
		case len(servers) == 0:
		case e.domain == "":
			for _, s := range servers {
				if !slices.Contains(def, s) && len(def) < maxServers {
					def = append(def, s)
				}
			}
		case len(domains) < maxDomainResolvers:
			domains = append(domains, DomainResolver{Domain: e.domain, Servers: servers})
		}
	}
	return def, domains
}

// resolvConf is the nameservers of a resolv.conf file.
func resolvConf(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a, 53).String())
			}
		}
	}
	return out
}

// serversFor are the resolvers a query for name goes to: those of the
// longest domain that name is or is under, else the default ones. name is
// the guest's, in presentation form: it is compared label by label
// (dns.IsSubDomain), so that neither "evilcorp.example" nor a label with
// an escaped dot ("x\.corp.example", a name under "example") reaches
// corp.example's resolvers.
func (c *Config) serversFor(name string) []string {
	if name == "" {
		return c.Resolvers
	}
	name = dns.Fqdn(name)
	var best *DomainResolver
	for i, d := range c.DomainResolvers {
		if dns.IsSubDomain(dns.Fqdn(d.Domain), name) && (best == nil || dns.CountLabel(dns.Fqdn(d.Domain)) > dns.CountLabel(dns.Fqdn(best.Domain))) {
			best = &c.DomainResolvers[i]
		}
	}
	if best != nil {
		return best.Servers
	}
	return c.Resolvers
}
