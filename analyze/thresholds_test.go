package analyze

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/host"
)

// The near-full thresholds are the documented ones: a warning from 75 %
// of nf_conntrack_max (node-mixin's alert), critical from 90 % (netdata's
// first critical level); at 100 % table-full takes over. Each boundary is
// checked on both sides.
var nearFullCases = []struct {
	count int64 // of 100000
	want  string
}{
	{60000, ""},
	{70000, ""},
	{74999, ""},
	{75000, Warning},
	{80000, Warning},
	{89999, Warning},
	{90000, Critical},
	{92000, Critical},
	{94999, Critical},
	{95000, Critical},
	{99999, Critical},
}

func nearFullSnapshot(count int64) *host.Snapshot {
	return &host.Snapshot{Source: "proc", Kernel: "6.18.44", CPUs: 2, MemBytes: 8 << 30,
		NetNS: host.NetNS{Name: "init", Init: true, Inode: 4026531840},
		Settings: host.Settings{Count: count, Max: 100000, Buckets: 100000, HashSize: 100000, SlabSize: 256,
			Timeouts: map[string]int64{}, Switches: map[string]int64{}}}
}

func TestTableNearFullThresholds(t *testing.T) {
	for _, c := range nearFullCases {
		r := Analyze(nearFullSnapshot(c.count), nil, time.Now())
		got := ""
		for _, f := range r.Findings {
			if f.ID == "table-near-full" {
				got = f.Severity
			}
		}
		if got != c.want {
			t.Errorf("%d of 100000 entries: table-near-full %q, want %q", c.count, got, c.want)
		}
	}
	// Full is table-full's, not near-full's.
	r := Analyze(nearFullSnapshot(100000), nil, time.Now())
	for _, f := range r.Findings {
		if f.ID == "table-near-full" {
			t.Errorf("a full table also reports table-near-full (%s)", f.Severity)
		}
	}
}

// The same thresholds apply to each namespace of --all-netns.
func TestNetNSNearFullThresholds(t *testing.T) {
	for _, c := range nearFullCases {
		s := nearFullSnapshot(100)
		s.AllNetNS = []host.NetNSUsage{
			{NetNS: host.NetNS{Name: "init", Init: true}, Count: 100, Max: 100000},
			{NetNS: host.NetNS{Name: "busy"}, Count: c.count, Max: 100000},
		}
		r := Analyze(s, nil, time.Now())
		got := ""
		for _, f := range r.Findings {
			if f.ID == "netns-near-full" {
				got = f.Severity
				if ns := fmt.Sprint(f.Evidence["namespaces"]); c.want != "" && !strings.Contains(ns, "busy") {
					t.Errorf("%d entries: evidence %s does not name the namespace", c.count, ns)
				}
			}
		}
		if got != c.want {
			t.Errorf("namespace with %d of 100000 entries: netns-near-full %q, want %q", c.count, got, c.want)
		}
	}
}
