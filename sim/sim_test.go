package sim

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// Every expectation below is computed from the scenario's numbers and the
// kernel's documented timeouts (docs/kernel-conntrack.md), never from a
// previous run: Little's law says a state holds (arrival rate × time spent
// in it) entries.

const (
	twTimeout      = 120.0 // nf_conntrack_tcp_timeout_time_wait, seconds
	udpTimeout     = 30.0  // nf_conntrack_udp_timeout
	icmpTimeout    = 30.0  // nf_conntrack_icmp_timeout
	clientPortSpan = 60999 - 32768 + 1
)

// upstream is the classic case: nginx opening a new loopback connection per
// request to local upstreams, which close first (HTTP/1.0).
func upstream(rate float64, extra string) string {
	return fmt.Sprintf(`
name: upstream
duration: 240s
step: 2s
seed: 42
settings:
  nf_conntrack_max: 1000000
  nf_conntrack_buckets: 1000000
%s
workloads:
  - name: upstream
    proto: tcp
    rate: %g
    client: 127.0.0.1
    server: 127.0.0.1
    server_port: 8080-8087
    iface: lo
    lifetime: 2ms
    rtt: 100us
    closer: server
`, extra, rate)
}

func run(t *testing.T, yaml string) *Result {
	t.Helper()
	sc, err := ParseScenario(t.Name()+".yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(context.Background(), sc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func within(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if want == 0 {
		if got != 0 {
			t.Errorf("%s = %.0f, want 0", what, got)
		}
		return
	}
	if math.Abs(got-want)/want > tol {
		t.Errorf("%s = %.0f, want %.0f ± %.0f%%", what, got, want, tol*100)
	} else {
		t.Logf("%s = %.0f, want %.0f ± %.0f%% (off by %+.2f%%)", what, got, want, tol*100, (got-want)/want*100)
	}
}

func TestLittlesLawShortConnections(t *testing.T) {
	for _, tc := range []struct {
		rate     float64
		timeWait float64
	}{
		{1000, twTimeout},
		{2000, 30},
	} {
		t.Run(fmt.Sprintf("%g/s,time_wait=%g", tc.rate, tc.timeWait), func(t *testing.T) {
			extra := ""
			if tc.timeWait != twTimeout {
				extra = fmt.Sprintf("  nf_conntrack_tcp_timeout_time_wait: %g", tc.timeWait)
				extra = strings.Replace(upstream(tc.rate, ""), "  nf_conntrack_buckets: 1000000\n", "  nf_conntrack_buckets: 1000000\n"+extra+"\n", 1)
			} else {
				extra = upstream(tc.rate, "")
			}
			r := run(t, extra)
			// Each connection spends timeWait in TIME_WAIT and a few
			// milliseconds (2 ms lifetime + a few 50 µs half-RTTs) in the
			// other states: rate × (timeWait + ~0.003 s).
			want := tc.rate * (tc.timeWait + 0.003)
			within(t, "steady count", float64(r.Steady.Total), want, 0.05)
			within(t, "steady TIME_WAIT", float64(r.Steady.TCP[conntrack.TCPTimeWait]), tc.rate*tc.timeWait, 0.05)
			if r.Drop != 0 || r.FirstDrop >= 0 {
				t.Errorf("drops on a table with room: %d (first at %s)", r.Drop, r.FirstDrop)
			}
			// The table grows linearly until the first entries expire:
			// half way through the time_wait window it holds rate × t.
			half := time.Duration(tc.timeWait / 2 * float64(time.Second))
			for _, s := range r.Timeline {
				if s.Time == half.Truncate(2*time.Second) {
					within(t, fmt.Sprintf("count at %s", s.Time), float64(s.Total), tc.rate*s.Time.Seconds(), 0.05)
				}
			}
		})
	}
}

func TestLittlesLawOtherProtocols(t *testing.T) {
	r := run(t, `
name: mix
duration: 100s
step: 1s
seed: 3
workloads:
  - name: dns
    proto: udp
    dns: true
    rate: 1000
    client: 10.0.0.0/16
    server: 10.0.0.53
    host: server
  - name: ping
    proto: icmp
    rate: 500
    client: 10.1.0.0/16
    server: 10.0.0.1
  - name: pool
    proto: tcp
    kind: keepalive
    rate: 50
    client: 10.2.0.0/24
    server: 10.0.0.5
    server_port: 5432
    lifetime: 20s
    interval: 1s
    closer: client
`)
	// DNS: one query and one answer within 2 s: the entry keeps the
	// unreplied timeout, 30 s. Echo request/reply: icmp_timeout 30 s.
	within(t, "udp", float64(r.Steady.UDP), 1000*udpTimeout, 0.05)
	within(t, "icmp", float64(r.Steady.ICMP), 500*icmpTimeout, 0.05)
	// Keepalive connections are ESTABLISHED for their 20 s lifetime; after
	// 100 s, every connection closed since 0 s is still in TIME_WAIT
	// (120 s > 100 s − 20 s): rate × (t − lifetime) at t = 100 s.
	within(t, "ESTABLISHED", float64(r.Steady.TCP[conntrack.TCPEstablished]), 50*20, 0.05)
	within(t, "TIME_WAIT at the end", float64(r.Final.TCP[conntrack.TCPTimeWait]), 50*(100-20), 0.05)
	if r.Steady.Unreplied > 10 {
		t.Errorf("%d unreplied entries: every query and ping was answered", r.Steady.Unreplied)
	}
}

func TestPortReuseCapsOneDestination(t *testing.T) {
	// One client, one server:port: the client cycles through its 28,232
	// ephemeral ports in 28 s, well inside TIME_WAIT's 120 s; the SYN that
	// reuses a 4-tuple reopens the TIME_WAIT entry, so the table holds one
	// entry per port, not rate × 120 s.
	yaml := strings.Replace(upstream(1000, ""), "server_port: 8080-8087", "server_port: 8080", 1)
	r := run(t, yaml)
	within(t, "steady count", float64(r.Steady.Total), clientPortSpan, 0.01)
	if r.Peak > clientPortSpan+50 {
		t.Errorf("peak %d: more entries than client ports (%d) for one destination", r.Peak, clientPortSpan)
	}
}

func TestNoTrackOnLoopback(t *testing.T) {
	for _, tc := range []struct {
		name, rule string
		want       float64
	}{
		// Both hooks (how ctdoctor and the usual advice write it): nothing tracked.
		{"both hooks", "notrack: [{iface: lo}]", 0},
		// OUTPUT alone suffices: loopback packets are tracked at OUTPUT only.
		{"output", "notrack: [{iface: lo, hook: output}]", 0},
		// PREROUTING alone does not: the packet was tracked at OUTPUT
		// before it looped back (docs/kernel-conntrack.md §9).
		{"prerouting only", "notrack: [{iface: lo, hook: prerouting}]", 1000 * twTimeout},
		// A rule for another interface changes nothing.
		{"other iface", "notrack: [{iface: eth0}]", 1000 * twTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, upstream(1000, tc.rule))
			if tc.want == 0 {
				if r.Peak != 0 {
					t.Errorf("peak %d entries with NOTRACK on lo, want an empty table", r.Peak)
				}
				return
			}
			within(t, "steady count", float64(r.Steady.Total), tc.want, 0.05)
		})
	}
}

func TestDropsStartWhenTheTableFills(t *testing.T) {
	// max 60,000 entries, 1,000 new connections/s, none expiring before
	// 120 s: the table fills — and the first SYN is dropped — at
	// 60,000 / 1,000 = 60 s.
	yaml := strings.Replace(upstream(1000, ""), "nf_conntrack_max: 1000000\n  nf_conntrack_buckets: 1000000", "nf_conntrack_max: 60000\n  nf_conntrack_buckets: 65536", 1)
	r := run(t, yaml)
	if r.FirstDrop < 0 {
		t.Fatalf("no drop: %s", r.Verdict())
	}
	within(t, "first drop (s)", r.FirstDrop.Seconds(), 60, 0.05)
	if r.Drop == 0 {
		t.Errorf("the drop counter stayed 0 though a packet was dropped at %s", r.FirstDrop)
	}
	for _, s := range r.Timeline {
		if s.Total > 60000 {
			t.Fatalf("count %d at %s exceeds the max 60000", s.Total, s.Time)
		}
		if s.Time < r.FirstDrop && s.DropTotal > 0 {
			t.Fatalf("drop counter %d at %s, before the first drop at %s", s.DropTotal, s.Time, r.FirstDrop)
		}
	}
	if !strings.Contains(r.Verdict(), "table full at 00:01:0") && !strings.Contains(r.Verdict(), "table full at 00:00:5") {
		t.Errorf("verdict %q does not name the fill time (~00:01:00)", r.Verdict())
	}
	// Dropped SYNs are retransmitted (1 s, 3 s, … later), so few
	// connections give up early on; the retransmissions are counted.
	if r.Retransmits == 0 {
		t.Error("no SYN was retransmitted after the drops")
	}
}

func TestSameSeedSameRun(t *testing.T) {
	sc, err := BuiltinScenario("dns-udp")
	if err != nil {
		t.Fatal(err)
	}
	sc.Duration = 40 * time.Second
	sc.Step = 0
	var runs [2]*Result
	for i := range runs {
		if runs[i], err = Run(context.Background(), sc, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := runs[0], runs[1]
	if len(a.Timeline) != len(b.Timeline) {
		t.Fatalf("timelines differ in length: %d vs %d", len(a.Timeline), len(b.Timeline))
	}
	for i := range a.Timeline {
		if a.Timeline[i] != b.Timeline[i] {
			t.Fatalf("sample %d differs:\n%+v\n%+v", i, a.Timeline[i], b.Timeline[i])
		}
	}
	sc.Seed++
	c, err := Run(context.Background(), sc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Packets == a.Packets && c.Final == a.Final {
		t.Error("another seed gave the identical run")
	}
}

func TestSYNRetransmissionsOfUnansweredConnections(t *testing.T) {
	// Every SYN goes unanswered: Linux sends it at 0, 1, 3, 7, 15, 31 and
	// 63 s (tcp_syn_retries 6), then gives up.
	r := run(t, `
name: blackhole
duration: 300s
step: 1s
workloads:
  - name: dead-backend
    proto: tcp
    rate: 10
    client: 10.0.0.1
    server: 10.9.9.9
    server_port: 80
    host: client
    unanswered: 1
`)
	// The k-th retransmission (k = 1…6) comes 2^k − 1 s after the first
	// SYN, so it happened for the connections started before 300 − (2^k − 1):
	// 10 × Σ (300 − (2^k − 1)) = 10 × (1800 − 120).
	within(t, "retransmissions", float64(r.Retransmits), 10*(6*300-(1+3+7+15+31+63)), 0.05)
	if r.Failed != 0 {
		t.Errorf("%d connections counted as failed by conntrack; they failed for want of an answer", r.Failed)
	}
	if r.Steady.Unreplied != r.Steady.TCP[conntrack.TCPSynSent] || r.Steady.Total != r.Steady.Unreplied {
		t.Errorf("steady %+v: every entry should be an unreplied SYN_SENT", r.Steady)
	}
	// The kernel does not refresh SYN_SENT's 120 s on a retransmitted SYN
	// (engine/kernel_test.go, tcp/handshake-retransmits-after-a-pause): an
	// entry lives 120 s from the first SYN, so 10/s × 120 s of them.
	kernel := 10 * 120.0
	got := float64(r.Steady.TCP[conntrack.TCPSynSent])
	within(t, "SYN_SENT", got, kernel, 0.05)
}

func TestMiddleboxIdleDropLeavesEstablished(t *testing.T) {
	// Every connection is idle 10 min after its first request and the
	// middlebox forgets it after 5: the hosts never close it, so the
	// entry stays ESTABLISHED for tcp_timeout_established (5 days) and the
	// count grows by the rate: 2/s × 3,600 s after an hour.
	r := run(t, `
name: idle
duration: 1h
step: 1m
workloads:
  - name: pool
    proto: tcp
    kind: keepalive
    rate: 2
    client: 10.0.0.0/24
    server: 10.1.0.1
    server_port: 3306
    host: client
    lifetime: 1h
    interval: 10m
    middlebox_idle_drop: 5m
`)
	within(t, "ESTABLISHED at the end", float64(r.Final.TCP[conntrack.TCPEstablished]), 2*3600, 0.05)
	if r.Final.TCP[conntrack.TCPTimeWait] != 0 {
		t.Errorf("%d TIME_WAIT entries: no connection was closed", r.Final.TCP[conntrack.TCPTimeWait])
	}
	within(t, "lost", float64(r.Lost), 2*3600, 0.05)
}

func TestIPv6Workloads(t *testing.T) {
	r := run(t, `
name: v6
duration: 60s
step: 1s
workloads:
  - name: web
    proto: tcp
    rate: 100
    client: 2001:db8:1::/48
    server: 2001:db8::80
    server_port: 443
  - name: ping
    proto: icmp
    rate: 100
    client: 2001:db8:2::/64
    server: 2001:db8::1
`)
	// Nothing expires within 60 s of TIME_WAIT's 120: 100/s × 60 s. Echo
	// requests are ICMPv6 (128/129), 30 s each: 100/s × 30 s.
	within(t, "TIME_WAIT", float64(r.Final.TCP[conntrack.TCPTimeWait]), 100*60, 0.05)
	within(t, "icmpv6", float64(r.Steady.ICMP), 100*icmpTimeout, 0.05)
}
