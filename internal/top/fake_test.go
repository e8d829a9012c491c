package top

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/watch"
)

// fakeSource is a watch.Source whose frames the test sets.
type fakeSource struct {
	mu     sync.Mutex
	labels []string
	frames map[string]watch.Frame
	closed bool
}

func newFake(frames ...watch.Frame) *fakeSource {
	s := &fakeSource{frames: map[string]watch.Frame{}}
	for _, f := range frames {
		s.set(f)
	}
	return s
}

// set adds or replaces a namespace's frame.
func (s *fakeSource) set(f watch.Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.labels, f.NetNS) {
		s.labels = append(s.labels, f.NetNS)
	}
	s.frames[f.NetNS] = f
}

// drop stops watching a namespace.
func (s *fakeSource) drop(label string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.labels = slices.DeleteFunc(s.labels, func(l string) bool { return l == label })
	delete(s.frames, label)
}

func (s *fakeSource) Namespaces() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.labels)
}

func (s *fakeSource) Frame(label string) (watch.Frame, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.frames[label]
	return f, ok
}

func (s *fakeSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

var t0 = time.Date(2026, 12, 1, 6, 30, 0, 0, time.UTC)

// rows makes n rows keyed by key(i), with entries falling from top.
func rows(n int, top int64, key func(i int) string) []watch.Row {
	out := make([]watch.Row, n)
	for i := range out {
		out[i] = watch.Row{Key: key(i), Entries: top / int64(i+1), Delta: int64((i%3 - 1) * (i + 1) * 7)}
	}
	return out
}

// busyFrame is a frame like the README's demo: a web tier with loopback
// traffic, every table full, findings with long fixes, kernel log events.
func busyFrame(label string) watch.Frame {
	states := []string{"TIME_WAIT", "ESTABLISHED", "SYN_SENT", "CLOSE", "CLOSE_WAIT", "SYN_RECV", "FIN_WAIT", "LAST_ACK"}
	top := func(keys func(i int) string) []watch.Row {
		r := rows(10, 28232, keys)
		return append(r, watch.Row{Key: "other", Entries: 4321, Delta: -12})
	}
	return watch.Frame{
		Time: t0, NetNS: label, Count: 53232, Max: 262144, Buckets: 262144, Usage: 53232.0 / 262144,
		Mode: watch.ModeEvents, ListedAt: t0.Add(-10 * time.Second),
		NewPerSec: 6917, DropPerSec: 0, EarlyDropPerSec: 0, InsertFailedPerSec: 0.5,
		TimeToFull: 3*time.Minute + 12*time.Second,
		ByState:    rows(len(states), 38123, func(i int) string { return states[i] }),
		ByProto:    []watch.Row{{Key: "tcp", Entries: 48259, Delta: 317}, {Key: "udp", Entries: 4192}, {Key: "icmp", Entries: 781, Delta: -4}},
		TopSources: top(func(i int) string { return fmt.Sprintf("10.1.0.%d", i+1) }),
		TopDests:   top(func(i int) string { return fmt.Sprintf("10.200.0.%d", i+1) }),
		TopServices: top(func(i int) string {
			return fmt.Sprintf("10.200.0.%d:%d/tcp", i+1, 8080+i)
		}),
		KernelLog: []watch.LogEvent{
			{Time: t0.Add(-time.Minute), Count: 1, Message: "nf_conntrack: nf_conntrack: table full, dropping packet"},
			{Time: t0.Add(-time.Second), Count: 84, Message: "nf_conntrack: nf_conntrack: table full, dropping packet"},
		},
		Report: &analyze.Report{
			Verdict: analyze.Verdict{Level: analyze.Warning, Reason: "local ports running out: 127.0.0.1 → 127.0.0.1:80 holds 14116 TCP entries (14075 in TIME_WAIT), 50% of its 28232 local ports — connect() takes the even half first"},
			Findings: []analyze.Finding{
				{ID: "local-ports-exhausted", Severity: analyze.Warning, Summary: "local ports running out: 127.0.0.1 → 127.0.0.1:80 holds 14116 TCP entries",
					Explanation: "A TCP connection is identified by source address, source port, destination address and port.",
					Fixes: []string{"# widen the client's local port range (per network namespace)",
						"ip netns exec demo sysctl -w net.ipv4.ip_local_port_range=\"10000 65535\""}},
				{ID: "loopback-tracked", Severity: analyze.Warning, Summary: "53% of entries are loopback connections (28232) that need no tracking",
					Fixes: []string{"# stop tracking loopback traffic: accept its untracked packets first, then NOTRACK at raw priority (nft, all or nothing)",
						"ip netns exec demo nft 'insert rule inet fw input position 2 iif \"lo\" tcp dport 80 ct state untracked accept; add table inet ctdoctor_notrack; add chain inet ctdoctor_notrack prerouting { type filter hook prerouting priority raw; }'"}},
				{ID: "timewait-dominant", Severity: analyze.Info, Summary: "72% of entries are TIME_WAIT (38123): short-lived connections",
					Fixes: []string{"ip netns exec demo sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=30"}},
				{ID: "established-timeout-long", Severity: analyze.Info, Summary: "ESTABLISHED entries live 5 day(s) without traffic",
					Fixes: []string{"ip netns exec demo sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=86400"}},
			},
		},
	}
}
