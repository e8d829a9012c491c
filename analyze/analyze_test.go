package analyze

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
)

// The table in kernel-conntrack.md §1.
func TestDefaultSizing(t *testing.T) {
	const mib, gib = 1 << 20, 1 << 30
	for _, tc := range []struct {
		kernel       string
		mem          uint64
		buckets, max int64
	}{
		{"5.4.0", 512 * mib, 4096, 16384},
		{"5.4.0", 2 * gib, 16384, 65536},
		{"5.4.0", 8 * gib, 65536, 262144},
		{"6.18.44", 512 * mib, 4096, 4096},
		{"5.15.0", 2 * gib, 65536, 65536},
		{"6.8.0-45-generic", 8 * gib, 262144, 262144},
		{"6.18.44", 24 * gib, 262144, 262144}, // this machine: /proc/sys/net/netfilter/nf_conntrack_max = 262144
		{"6.1.0", 64 * mib, 1024, 1024},
	} {
		b, m := DefaultSizing(ParseKernelVersion(tc.kernel), tc.mem, false)
		if b != tc.buckets || m != tc.max {
			t.Errorf("%s with %d MiB: got %d/%d, want %d/%d", tc.kernel, tc.mem/mib, b, m, tc.buckets, tc.max)
		}
	}
}

// The CentOS 5 field report: ip_conntrack_max 16640 = 8 × 2080 buckets, which
// 2.6.18 picks for 520 MiB (RAM / 16 KiB / 16-byte list heads).
func TestDefaultSizingLegacy(t *testing.T) {
	if b, m := DefaultSizing(ParseKernelVersion("2.6.18-164.el5"), 520<<20, true); b != 2080 || m != 16640 {
		t.Errorf("got %d/%d, want 2080/16640", b, m)
	}
	if b, m := DefaultSizing(ParseKernelVersion("2.6.18-164.el5"), 4<<30, true); b != 8192 || m != 65536 {
		t.Errorf("above 1 GiB: got %d/%d, want 8192/65536 (the 65536 a commenter on the CentOS 5 report gives)", b, m)
	}
}

// The classic sizing write-up's worked example: 262144 × 352 + 65536 × 8 = 92,798,976 bytes,
// and 1048576 × 352 + 262144 × 8 = 371,195,904.
func TestTableMemorySeed001(t *testing.T) {
	if got := TableMemory(262144, 65536, 352); got != 92798976 {
		t.Errorf("got %d", got)
	}
	if got := TableMemory(1048576, 262144, 352); got != 371195904 {
		t.Errorf("got %d", got)
	}
}

func TestParseKernelVersion(t *testing.T) {
	for in, want := range map[string]KernelVersion{
		"6.18.44-fc-v669": {6, 18, 44}, "2.6.18-398.el5": {2, 6, 18}, "5.15.0-91-generic": {5, 15, 0}, "": {}, "x": {},
	} {
		if got := ParseKernelVersion(in); got != want {
			t.Errorf("%q: got %v", in, got)
		}
	}
}

func flowsFrom(t *testing.T, text string) *Breakdown {
	t.Helper()
	acc := NewAccumulator()
	if err := conntrack.ReadAll(strings.NewReader(text))(func(f *conntrack.Flow) error { acc.Add(f); return nil }); err != nil {
		t.Fatal(err)
	}
	b := acc.Breakdown()
	return &b
}

func TestBreakdownCounts(t *testing.T) {
	text := `tcp      6 119 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=41430 dport=8080 src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=41430 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=41432 dport=443 src=10.0.0.2 dst=10.0.0.1 sport=443 dport=41432 [ASSURED] mark=7 use=1
tcp      6 100 SYN_SENT src=10.0.0.1 dst=10.0.0.3 sport=41433 dport=443 [UNREPLIED] src=10.0.0.3 dst=10.0.0.1 sport=443 dport=41433 mark=0 use=1
udp      17 29 src=10.0.0.9 dst=10.0.0.53 sport=35306 dport=53 [UNREPLIED] src=10.0.0.53 dst=10.0.0.9 sport=53 dport=35306 mark=0 zone=3 use=1
udp      17 29 src=::1 dst=::1 sport=45487 dport=53 [UNREPLIED] src=::1 dst=::1 sport=53 dport=45487 mark=0 use=1
icmp     1 29 src=10.0.0.1 dst=10.0.0.2 type=8 code=0 id=3052 src=10.0.0.2 dst=10.0.0.1 type=0 code=0 id=3052 mark=0 use=1
tcp      6 86399 ESTABLISHED src=172.17.0.2 dst=93.184.216.34 sport=40000 dport=443 src=93.184.216.34 dst=192.168.1.10 sport=443 dport=40000 [ASSURED] mark=0 use=1
`
	b := flowsFrom(t, text)
	if b.Total != 7 || b.L4["tcp"] != 4 || b.L4["udp"] != 2 || b.L4["icmp"] != 1 || b.L3["ipv6"] != 1 {
		t.Errorf("protocols: %+v %+v", b.L3, b.L4)
	}
	if b.TCPState["ESTABLISHED"] != 2 || b.TCPState["TIME_WAIT"] != 1 || b.TCPState["SYN_SENT"] != 1 {
		t.Errorf("states: %+v", b.TCPState)
	}
	if b.Status["assured"] != 3 || b.Status["unreplied"] != 3 || b.Loopback != 2 || b.NAT != 1 {
		t.Errorf("status %+v loopback %d nat %d", b.Status, b.Loopback, b.NAT)
	}
	if b.TopSources[0] != (AddrCount{"10.0.0.1", 3}) {
		t.Errorf("top source: %+v", b.TopSources)
	}
	if s := b.TopServices[0]; s.Proto != "tcp" || s.Port != 443 || s.Count != 3 || s.Unreplied != 1 {
		t.Errorf("top service: %+v", b.TopServices)
	}
	if b.Zones["3"] != 1 || b.Zones["0"] != 6 || b.Marks["7"] != 1 {
		t.Errorf("zones %v marks %v", b.Zones, b.Marks)
	}
	if b.TTL["10s-1m"] != 3 || b.TTL["1m-5m"] != 2 || b.TTL["1h-1d"] != 1 || b.TTL[">=1d"] != 1 {
		t.Errorf("ttl: %v", b.TTL)
	}
}

func TestAccumulatorMerge(t *testing.T) {
	data, err := os.ReadFile("../conntrack/testdata/kernel-proc.txt")
	if err != nil {
		t.Fatal(err)
	}
	whole := NewAccumulator()
	a, b := NewAccumulator(), NewAccumulator()
	i := 0
	_ = conntrack.ReadAll(strings.NewReader(string(data)))(func(f *conntrack.Flow) error {
		whole.Add(f)
		if i%2 == 0 {
			a.Add(f)
		} else {
			b.Add(f)
		}
		i++
		return nil
	})
	a.Merge(b)
	wb, mb := whole.Breakdown(), a.Breakdown()
	if wb.Total != mb.Total || len(wb.TopSources) != len(mb.TopSources) || wb.TopSources[0] != mb.TopSources[0] || wb.TCPState["TIME_WAIT"] != mb.TCPState["TIME_WAIT"] {
		t.Errorf("merge differs: %+v vs %+v", wb, mb)
	}
}

func baseSnapshot() *host.Snapshot {
	return &host.Snapshot{Source: "proc", Kernel: "6.18.44", CPUs: 2, MemBytes: 8 << 30,
		NetNS: host.NetNS{Name: "init", Init: true, Inode: 4026531840},
		Settings: host.Settings{Count: 1000, Max: 262144, Buckets: 262144, HashSize: 262144, SlabSize: 256,
			Timeouts: map[string]int64{"tcp_timeout_established": 432000, "tcp_timeout_time_wait": 120}},
		TCP: host.TCPSysctls{KeepaliveTime: 7200, KeepaliveIntvl: 75, KeepaliveProbes: 9}}
}

func ids(r *Report) map[string]string {
	m := map[string]string{}
	for _, f := range r.Findings {
		m[f.ID] = f.Severity
		if f.Summary == "" || f.Explanation == "" || len(f.Fixes)+len(f.Changes) == 0 {
			panic("finding without summary, explanation or fixes: " + f.ID)
		}
		for _, l := range f.Fixes {
			if !strings.HasPrefix(l, "# ") {
				panic(f.ID + ": a fix line that is not prose (commands come from Changes, through the planner): " + l)
			}
		}
	}
	return m
}

func TestRulesTableFull(t *testing.T) {
	now := time.Now()
	s := baseSnapshot()
	s.Settings.Count = 262144
	st := conntrack.Stats{}
	st.Set(conntrack.StatDrop, 42)
	s.Stats = &host.StatsRead{At: now.Add(-time.Second), Source: "proc", Total: st}
	st2 := st
	st2.Set(conntrack.StatDrop, 52)
	s.Stats2 = &host.StatsRead{At: now, Source: "proc", Total: st2}
	s.Log = host.LogSummary{TableFullEvents: 3, Last: now.Add(-time.Minute), ByNetNS: []host.NetNSCount{{Inode: 4026531840, Count: 3}}}
	r := Analyze(s, nil, now)
	got := ids(r)
	if got["table-full"] != Critical || r.Verdict.Level != Critical {
		t.Fatalf("findings %v verdict %+v", got, r.Verdict)
	}
	f := r.Findings[0]
	if f.ID != "table-full" || f.Evidence["drop"] != uint64(52) || f.Evidence["drop_per_second"] != 10.0 || f.Evidence["log_events"] != 3 {
		t.Errorf("evidence: %+v", f.Evidence)
	}
	if _, ok := got["table-near-full"]; ok {
		t.Error("table-near-full must not repeat table-full")
	}
}

func TestRulesHistoricDropsOnly(t *testing.T) {
	s := baseSnapshot()
	st := conntrack.Stats{}
	st.Set(conntrack.StatDrop, 5)
	s.Stats = &host.StatsRead{Source: "proc", Total: st}
	r := Analyze(s, nil, time.Now())
	if ids(r)["table-full"] != Warning {
		t.Errorf("historic drops should warn: %v", ids(r))
	}
}

func TestRulesInsertFailedIsNotTableFull(t *testing.T) {
	s := baseSnapshot()
	st := conntrack.Stats{}
	st.Set(conntrack.StatInsertFailed, 900)
	st.Set(conntrack.StatClashResolve, 1200)
	s.Stats = &host.StatsRead{Source: "netlink", Total: st}
	got := ids(Analyze(s, nil, time.Now()))
	if got["insert-failed-races"] != Warning {
		t.Errorf("want insert-failed-races: %v", got)
	}
	if _, ok := got["table-full"]; ok {
		t.Errorf("insert_failed alone must not report table-full: %v", got)
	}
}

func TestRulesSizing(t *testing.T) {
	s := baseSnapshot()
	s.Kernel = "5.4.0-150-generic"
	s.Settings.Max, s.Settings.Buckets, s.Settings.Count = 262144, 65536, 200000
	got := ids(Analyze(s, nil, time.Now()))
	if got["max-buckets-ratio"] != Warning || got["table-near-full"] != Warning || got["hash-chains-long"] != Info {
		t.Errorf("sizing findings: %v", got)
	}
	s = baseSnapshot()
	if got := ids(Analyze(s, nil, time.Now())); got["max-buckets-ratio"] != "" || got["hash-chains-long"] != "" {
		t.Errorf("1:1 sizing must not be flagged: %v", got)
	}
	if r := Analyze(s, nil, time.Now()); r.Verdict.Level != Healthy {
		t.Errorf("verdict %+v", r.Verdict)
	}
}

func TestRulesTraffic(t *testing.T) {
	var sb strings.Builder
	for i := range 600 {
		// nginx → local upstream: short connections in TIME_WAIT on loopback
		sb.WriteString("tcp      6 100 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=" + itoa(int64(20000+i)) + " dport=8080 src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=" + itoa(int64(20000+i)) + " [ASSURED] mark=0 use=1\n")
	}
	for i := range 400 {
		sb.WriteString("udp      17 20 src=10.9.0." + itoa(int64(i%200+1)) + " dst=10.0.0.1 sport=" + itoa(int64(1000+i)) + " dport=5060 [UNREPLIED] src=10.0.0.1 dst=10.9.0." + itoa(int64(i%200+1)) + " sport=5060 dport=" + itoa(int64(1000+i)) + " mark=0 use=1\n")
	}
	s := baseSnapshot()
	r := Analyze(s, flowsFrom(t, sb.String()), time.Now())
	got := ids(r)
	for _, id := range []string{"timewait-dominant", "loopback-tracked", "unreplied-flood", "busy-port-tracked"} {
		if _, ok := got[id]; !ok {
			t.Errorf("missing %s in %v", id, got)
		}
	}
	// NOTRACK is data for the planner, which places the accept rule for
	// untracked packets in the host's real ruleset (package tune, ruleset).
	for _, f := range r.Findings {
		if f.ID == "loopback-tracked" && (len(f.Changes) != 1 || f.Changes[0].Kind != ChangeNotrack || f.Changes[0].Match == nil || !f.Changes[0].Match.Loopback) {
			t.Errorf("loopback-tracked changes %+v, want one notrack change for loopback", f.Changes)
		}
	}
}

// An ESTABLISHED entry counts as idle when its remaining timeout shows it
// has been silent longer than keepalive would take to give up on the peer
// (432000 − 7875 s) — but not when it is on the 300 s timeout the kernel
// gives an entry with unacknowledged data (engine/kernel_test.go checks
// that timeout against the kernel), which says nothing about idleness.
func TestIdleEstablishedWindow(t *testing.T) {
	s := baseSnapshot()
	above, below := IdleWindow(s)
	if above != 300 || below != 432000-7875 {
		t.Fatalf("IdleWindow = (%d, %d), want (300, %d)", above, below, 432000-7875)
	}
	s.Settings.Timeouts["tcp_timeout_max_retrans"] = 600
	if above, _ := IdleWindow(s); above != 600 {
		t.Fatalf("above = %d with tcp_timeout_max_retrans 600, want 600", above)
	}
	a := NewAccumulator()
	a.IdleAbove, a.IdleAfter = 300, below
	for _, to := range []uint32{
		431990, // fresh
		424200, // silent for 7800 s: within the keepalive window
		1000,   // silent for ~5 days
		299,    // data in flight: the unacknowledged timeout
		300,
		424000, // silent for 8000 s
	} {
		a.Add(&conntrack.Flow{Family: conntrack.IPv4, Proto: conntrack.TCP, State: uint8(conntrack.TCPEstablished), Timeout: to})
	}
	if got := a.Breakdown().IdleEstablished; got != 2 {
		t.Fatalf("IdleEstablished = %d, want 2 (the 1000 s and 424000 s entries)", got)
	}
}
