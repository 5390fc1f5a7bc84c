//go:build linux

package netstack

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// A request line is the guest's to make long (up to the proxy's 1 MiB
// header limit): what the proxy records of it is clipped, so that the
// audit line stays short and the log verifies. A URL full of '&' (six
// bytes each in JSON) once made a 6 MiB line that verify could not read.
func TestTheProxyRecordsLongRequestsClipped(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	path := "/" + strings.Repeat("&", 900<<10)
	if status, _ := tn.proxyRaw(t, "GET http://nowhere.test"+path+" HTTP/1.1\r\nHost: nowhere.test\r\n\r\n"); status != http.StatusForbidden {
		t.Fatalf("GET: %d", status)
	}
	host := strings.Repeat("a", 200<<10) + ".test"
	if status, _ := tn.proxyRaw(t, "CONNECT "+host+":443 HTTP/1.1\r\nHost: x\r\n\r\n"); status != http.StatusForbidden {
		t.Fatalf("CONNECT: %d", status)
	}
	get := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP })
	if len(get.URL) > maxURL+3 || !strings.HasPrefix(get.URL, "http://nowhere.test/&&&") || !strings.HasSuffix(get.URL, "...") || get.Clipped {
		t.Errorf("GET recorded with a URL of %d bytes: %.60q…", len(get.URL), get.URL)
	}
	conn := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindConnect })
	if len(conn.Name) > maxHost+3 || len(conn.Rule) > maxText+3 || !strings.HasPrefix(conn.Name, "aaaa") {
		t.Errorf("CONNECT recorded with a name of %d bytes and a rule of %d", len(conn.Name), len(conn.Rule))
	}
	b, err := os.ReadFile(tn.auditLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(line) > audit.MaxRecord+512 {
			t.Errorf("a line of %d bytes: %.80q…", len(line), line)
		}
	}
	dir := filepath.Dir(tn.auditLog)
	v, err := audit.Verify(context.Background(), tn.auditLog, audit.Options{Key: filepath.Join(dir, "audit.key"), Head: filepath.Join(dir, "audit.head"), Live: true})
	if err != nil || !v.OK || v.Records < 2 {
		t.Fatalf("verify: %+v %v", v, err)
	}
}
