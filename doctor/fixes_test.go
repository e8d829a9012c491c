package doctor

import (
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/analyze"
)

// Advice lines outside the planner (local-ports-exhausted's port range,
// unreplied-flood's syncookies) get the namespace's prefix, and their
// host sysctl.d persistence becomes a note: pasted as printed they must
// change the namespace, never the host.
func TestAdviceLinesInNamespace(t *testing.T) {
	r := &analyze.Report{Findings: []analyze.Finding{{ID: "local-ports-exhausted", Fixes: []string{
		"# reuse connections",
		`sysctl -w net.ipv4.ip_local_port_range="10000 65535"`,
		"echo 'net.ipv4.ip_local_port_range = 10000 65535' >> /etc/sysctl.d/90-conntrack.conf   # persist across reboots",
		"ip netns exec demo sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=30",
	}}}}
	inNamespace(r, "ip netns exec demo ")
	got := r.Findings[0].Fixes
	if got[0] != "# reuse connections" || got[1] != `ip netns exec demo sysctl -w net.ipv4.ip_local_port_range="10000 65535"` ||
		!strings.HasPrefix(got[2], "# net.ipv4.ip_local_port_range is this namespace's own") ||
		got[3] != "ip netns exec demo sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=30" {
		t.Errorf("fixes:\n%s", strings.Join(got, "\n"))
	}
	inNamespace(r, "")
	if r.Findings[0].Fixes[1] != got[1] {
		t.Errorf("the caller's own namespace changed the lines")
	}
}
