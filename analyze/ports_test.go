package analyze

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

func findingByID(r *Report, id string) *Finding {
	for i := range r.Findings {
		if r.Findings[i].ID == id {
			return &r.Findings[i]
		}
	}
	return nil
}

// tcpFlow is a TCP entry src:sport → dst:dport in state st.
func tcpFlow(src, dst string, sport, dport uint16, st conntrack.TCPState, timeout uint32) *conntrack.Flow {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	f := &conntrack.Flow{Family: conntrack.IPv4, Proto: conntrack.TCP, State: uint8(st), Timeout: timeout,
		Status: conntrack.StatusAssured | conntrack.StatusSeenReply}
	f.Orig.Src, f.Orig.Dst, f.Orig.SrcPort, f.Orig.DstPort = s, d, sport, dport
	f.Reply.Src, f.Reply.Dst, f.Reply.SrcPort, f.Reply.DstPort = d, s, dport, sport
	return f
}

// portsTable is the table of issue 8 item 4 in small: one client
// (10.0.0.1) making short connections to 10.0.0.2:8080 has used n ports of
// its range since lo, each entry in TIME_WAIT; plus 300 ESTABLISHED
// entries of other clients.
func portsTable(n int, lo uint16) *Breakdown {
	a := NewAccumulator()
	for i := range n {
		a.Add(tcpFlow("10.0.0.1", "10.0.0.2", lo+uint16(i), 8080, conntrack.TCPTimeWait, 60))
	}
	for i := range 300 {
		a.Add(tcpFlow("10.1.0."+itoa(int64(i%50+1)), "10.0.0.2", 40000+uint16(i), 443, conntrack.TCPEstablished, 431000))
	}
	b := a.Breakdown()
	return &b
}

// Issue 8 item 4: TIME_WAIT stopped at 28,232 — the size of the default
// local port range 32768–60999 — because new connections reused TIME_WAIT
// tuples, and timewait-dominant still derived "about 235 closed connections
// per second" from it by Little's law.
func TestLocalPortsExhaustedSynthetic(t *testing.T) {
	s := baseSnapshot()
	s.TCP.PortRangeLow, s.TCP.PortRangeHigh = 32768, 60999
	const size = 60999 - 32768 + 1 // 28232
	r := Analyze(s, portsTable(size, 32768), time.Now())
	f := findingByID(r, "local-ports-exhausted")
	if f == nil {
		t.Fatalf("no local-ports-exhausted finding: %v", ids(r))
	}
	if f.Severity != Warning || f.Evidence["local_ports"] != int64(size) || f.Evidence["port_range_known"] != true {
		t.Errorf("severity %s evidence %v", f.Severity, f.Evidence)
	}
	row := f.Evidence["tuples"].([]map[string]any)[0]
	if row["src"] != "10.0.0.1" || row["dst"] != "10.0.0.2" || row["port"] != uint16(8080) ||
		row["entries"] != int64(size) || row["time_wait"] != int64(size) {
		t.Errorf("tuple %v, want 10.0.0.1 → 10.0.0.2:8080 with %d entries, all TIME_WAIT", row, size)
	}
	if !strings.Contains(f.Summary, "local ports exhausted") || !strings.Contains(f.Explanation, "32768–60999") {
		t.Errorf("summary %q / explanation %q", f.Summary, f.Explanation)
	}
	fixes := strings.Join(f.Fixes, "\n")
	for _, want := range []string{"keepalive", "more destinations", "widen the client's local port range"} {
		if !strings.Contains(fixes, want) {
			t.Errorf("fixes lack %q:\n%s", want, fixes)
		}
	}
	// The wider range is data for the planner, with the host's range as
	// the current value, per network namespace; its commands go after the
	// prose that explains them.
	want := Change{Kind: ChangeGenericSysctl, Key: "net.ipv4.ip_local_port_range", Value: "10000 65535", CurrentValue: "32768 60999",
		Current: -1, Proposed: -1, Scope: "netns"}
	if len(f.Changes) != 1 {
		t.Fatalf("changes %+v, want the port range", f.Changes)
	}
	got := f.Changes[0]
	got.Reason = ""
	if got != want || !strings.Contains(f.Changes[0].Reason, "55536 local ports per destination instead of 28232") {
		t.Errorf("change %+v, want %+v", f.Changes[0], want)
	}
	if f.ChangesAt != len(f.Fixes) {
		t.Errorf("the planner's commands go at %d of %d prose lines, want after the prose", f.ChangesAt, len(f.Fixes))
	}
	// timewait-dominant: 28232 / 120 s = 235 is a lower bound, not the rate.
	tw := findingByID(r, "timewait-dominant")
	if tw == nil {
		t.Fatalf("no timewait-dominant: %v", ids(r))
	}
	if strings.Contains(tw.Summary, "about") || !strings.Contains(tw.Summary, "at least 235 closed connections per second (a lower bound") {
		t.Errorf("timewait-dominant presents Little's law as the rate: %q", tw.Summary)
	}
	if tw.Evidence["closed_per_second_at_least"] != int64(235) || tw.Evidence["closed_per_second"] != nil {
		t.Errorf("timewait-dominant evidence %v", tw.Evidence)
	}
}

// Both sides of the threshold (90% of the range), a client with more
// entries than this host's range has ports (its own range is another), and
// an unknown range (Linux's default is assumed, and the finding says so).
func TestLocalPortsExhaustedThreshold(t *testing.T) {
	s := baseSnapshot()
	s.TCP.PortRangeLow, s.TCP.PortRangeHigh = 40000, 40999 // 1000 ports
	for _, tc := range []struct {
		n    int
		fire bool
		word string
	}{
		{449, false, ""},
		{450, true, "local ports running out"}, // 90% of the even half connect() takes first
		{899, true, "local ports running out"},
		{900, true, "local ports exhausted"},
		{1000, true, "local ports exhausted"},
		{1011, false, ""}, // more than 1000 ports: that client's range is another
	} {
		r := Analyze(s, portsTable(tc.n, 40000), time.Now())
		f := findingByID(r, "local-ports-exhausted")
		if (f != nil) != tc.fire {
			t.Errorf("%d entries for 1000 ports: fired %v, want %v", tc.n, f != nil, tc.fire)
		}
		if f != nil && !strings.HasPrefix(f.Summary, tc.word) {
			t.Errorf("%d of 1000: %q, want %q", tc.n, f.Summary, tc.word)
		}
		tw := findingByID(r, "timewait-dominant")
		if tw != nil && tc.fire == strings.Contains(tw.Summary, "about") {
			t.Errorf("%d entries: timewait-dominant %q", tc.n, tw.Summary)
		}
	}
	s.TCP.PortRangeLow, s.TCP.PortRangeHigh = -1, -1
	r := Analyze(s, portsTable(28232, 32768), time.Now())
	f := findingByID(r, "local-ports-exhausted")
	if f == nil || f.Evidence["port_range_known"] != false || !strings.Contains(f.Explanation, "was not read") {
		t.Fatalf("unknown range: %+v", f)
	}
	if len(f.Changes) != 1 || f.Changes[0].CurrentValue != "" || f.Changes[0].Value != "10000 65535" {
		t.Errorf("unknown range: changes %+v, want the wider range with no current value", f.Changes)
	}
	// A range already as wide as the proposal: nothing to change, no prose about it.
	s.TCP.PortRangeLow, s.TCP.PortRangeHigh = 10000, 65535
	r = Analyze(s, portsTable(30000, 10000), time.Now())
	if f := findingByID(r, "local-ports-exhausted"); f == nil || len(f.Changes) != 0 || strings.Contains(strings.Join(f.Fixes, " "), "widen") {
		t.Errorf("wide range: %+v", f)
	}
}

// The per-tuple counts stay exact while the table has at most maxTuples
// distinct tuples, and in bounded memory beyond: a heavy tuple is found
// with its exact count even when it arrives after 200,000 distinct ones.
func TestTupleSummaryBounded(t *testing.T) {
	a := NewAccumulator()
	for i := range 3000 {
		for range i%5 + 1 {
			a.Add(tcpFlow("10.2."+itoa(int64(i/250))+"."+itoa(int64(i%250)), "10.0.0.2", 1000, 80, conntrack.TCPEstablished, 100))
		}
	}
	for _, row := range a.Breakdown().TopTuples {
		if row.Error != 0 || row.Count != 5 {
			t.Fatalf("under maxTuples the counts must be exact: %+v", row)
		}
	}

	a = NewAccumulator()
	const heavy, unique = 30000, 200000
	for i := range unique {
		a.Add(tcpFlow("10.3."+itoa(int64(i/60000))+"."+itoa(int64(i/250%240)), "10.0.0."+itoa(int64(i%250)), 1000, uint16(i%60000+1), conntrack.TCPEstablished, 100))
	}
	for i := range heavy {
		st := conntrack.TCPTimeWait
		if i%10 == 0 {
			st = conntrack.TCPEstablished
		}
		a.Add(tcpFlow("10.9.9.9", "10.0.0.2", uint16(20000+i), 8080, st, 100))
	}
	if n := len(a.tuples.slots); n > maxTuples || len(a.tuples.m) > n {
		t.Fatalf("%d counters, %d map keys: want at most %d", n, len(a.tuples.m), maxTuples)
	}
	top := a.Breakdown().TopTuples[0]
	if top.Src != "10.9.9.9" || top.Dst != "10.0.0.2" || top.Port != 8080 || top.Count > heavy || top.Count+top.Error < heavy ||
		top.TimeWait > heavy*9/10 || top.TimeWait+top.Error < heavy*9/10 || top.Error > (heavy+unique)/maxTuples {
		t.Errorf("heavy tuple: %+v, want 10.9.9.9 → 10.0.0.2:8080, %d entries (%d TIME_WAIT), error ≤ %d",
			top, heavy, heavy*9/10, (heavy+unique)/maxTuples)
	}
}

// Merging two accumulators gives the counts of one that saw everything.
func TestTupleSummaryMerge(t *testing.T) {
	whole, a, b := NewAccumulator(), NewAccumulator(), NewAccumulator()
	for i := range 5000 {
		f := tcpFlow("10.0.0."+itoa(int64(i%7)), "10.0.1.1", uint16(10000+i), uint16(80+i%3), conntrack.TCPTimeWait, 100)
		whole.Add(f)
		if i%2 == 0 {
			a.Add(f)
		} else {
			b.Add(f)
		}
	}
	a.Merge(b)
	w, m := whole.Breakdown().TopTuples, a.Breakdown().TopTuples
	if len(w) != 10 || len(m) != len(w) {
		t.Fatalf("rows: whole %d, merged %d", len(w), len(m))
	}
	for i := range w {
		if w[i] != m[i] {
			t.Errorf("row %d: whole %+v, merged %+v", i, w[i], m[i])
		}
	}
}

// Issue 8 item 6: established-timeout-long fired on every default kernel,
// even with no ESTABLISHED entry. It fires when entries idle beyond the
// keepalive window are at least 5% of the table and at least 100.
func TestEstablishedTimeoutLongThreshold(t *testing.T) {
	s := baseSnapshot() // the kernel's defaults: 432000 s, keepalive 7875 s
	for _, tc := range []struct {
		name        string
		total, idle int64
		fire        bool
	}{
		{"no entries listed", 0, 0, false},
		{"no ESTABLISHED entries", 5000, 0, false},
		{"4.975% idle", 4000, 199, false},
		{"5% idle", 4000, 200, true},
		{"99 idle (9.9%)", 1000, 99, false},
		{"100 idle (10%)", 1000, 100, true},
	} {
		b := &Breakdown{Total: tc.total, TCPState: map[string]int64{"ESTABLISHED": tc.idle, "TIME_WAIT": tc.total - tc.idle},
			IdleEstablished: tc.idle}
		var bp *Breakdown
		if tc.total > 0 {
			bp = b
		}
		f := findingByID(Analyze(s, bp, time.Now()), "established-timeout-long")
		if (f != nil) != tc.fire {
			t.Errorf("%s: fired %v, want %v", tc.name, f != nil, tc.fire)
		}
		if f != nil && (f.Evidence["idle_established"] != tc.idle || !strings.Contains(f.Summary, itoa(tc.idle)+" entries")) {
			t.Errorf("%s: %q %v", tc.name, f.Summary, f.Evidence)
		}
	}
}
