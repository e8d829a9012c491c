package analyze

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/host"
)

// A healthy namespace whose kernel log holds "table full" events of other
// namespaces says so in its verdict (and in the JSON), and points to
// --all-netns: the level stays healthy, this namespace's table has room.
func TestVerdictOtherNamespacesTableFull(t *testing.T) {
	now := time.Date(2026, 11, 20, 14, 3, 0, 0, time.UTC)
	demoCreated := now.Add(-10 * time.Minute)
	for _, tc := range []struct {
		name      string
		edit      func(s *host.Snapshot)
		level     string
		other     int
		reasonHas string
	}{
		{"init, 21 events of one other namespace", func(s *host.Snapshot) {
			s.Log = host.LogSummary{Source: "/dev/kmsg", TableFullEvents: 21, First: now.Add(-2 * time.Minute), Last: now.Add(-time.Minute),
				ByNetNS: []host.NetNSCount{{Inode: 4026532177, Name: "demo", Count: 21, First: now.Add(-2 * time.Minute), Last: now.Add(-time.Minute)}}}
		}, Healthy, 21, `; the kernel log holds 21 "table full" events of other network namespaces — run ctdoctor --all-netns on the host to check them`},
		{"one event, namespaces already listed", func(s *host.Snapshot) {
			s.Log = host.LogSummary{Source: "/dev/kmsg", TableFullEvents: 1, Last: now.Add(-time.Minute),
				ByNetNS: []host.NetNSCount{{Inode: 4026532177, Count: 1, Last: now.Add(-time.Minute)}}}
			s.AllNetNS = []host.NetNSUsage{{NetNS: host.NetNS{Name: "demo", Inode: 4026532177}, Count: 10, Max: 262144}}
		}, Healthy, 1, `; the kernel log holds 1 "table full" event of other network namespaces (see the namespaces below)`},
		{"events only of namespaces that are gone", func(s *host.Snapshot) {
			s.Log = host.LogSummary{Source: "/dev/kmsg", TableFullEvents: 373, Last: now.Add(-time.Hour),
				ByNetNS: []host.NetNSCount{{Inode: 4026532177, Count: 210, Last: now.Add(-2 * time.Hour), Gone: true, ReusedBy: "demo"},
					{Inode: 4026532300, Count: 163, Last: now.Add(-time.Hour), Gone: true}}}
			s.AllNetNS = []host.NetNSUsage{{NetNS: host.NetNS{Name: "demo", Inode: 4026532177}, Count: 10, Max: 262144}}
		}, Healthy, 373, `; the kernel log holds 373 "table full" events of network namespaces that no longer exist`},
		{"this namespace's own events are not other namespaces'", func(s *host.Snapshot) {
			s.Log = host.LogSummary{Source: "/dev/kmsg", TableFullEvents: 3 + 5 + 2, Last: now.Add(-time.Minute),
				ByNetNS: []host.NetNSCount{{Inode: 4026531840, Count: 3, Last: now.Add(-time.Minute)}, {Inode: 4026532177, Count: 5, Last: now.Add(-time.Minute)}}}
		}, Critical, 5, `; the kernel log holds 5 "table full" events of other network namespaces — run ctdoctor --all-netns on the host to check them`},
		{"events before this namespace existed belong to an earlier one with its number", func(s *host.Snapshot) {
			s.NetNS = host.NetNS{Name: "demo", Inode: 4026532177, Created: demoCreated}
			s.Log = host.LogSummary{Source: "/dev/kmsg", TableFullEvents: 21, Last: demoCreated.Add(-time.Hour),
				ByNetNS: []host.NetNSCount{{Inode: 4026532177, Count: 21, First: demoCreated.Add(-2 * time.Hour), Last: demoCreated.Add(-time.Hour)}}}
		}, Healthy, 21, `; the kernel log holds 21 "table full" events of other network namespaces — run ctdoctor --all-netns on the host to check them`},
		{"this namespace's number unknown", func(s *host.Snapshot) {
			s.NetNS = host.NetNS{Name: "init"}
			s.Log = host.LogSummary{Source: "var/log/kern.log", TableFullEvents: 4,
				ByNetNS: []host.NetNSCount{{Inode: 4026532177, Count: 4}}}
		}, Healthy, 4, `; the kernel log holds 4 "table full" events naming a network namespace, and this one's number is unknown — run ctdoctor --all-netns on the host to check them`},
		{"no events elsewhere, no hint", func(s *host.Snapshot) {
			s.Log = host.LogSummary{Source: "/dev/kmsg"}
		}, Healthy, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSnapshot()
			tc.edit(s)
			r := Analyze(s, nil, now)
			if r.Verdict.Level != tc.level {
				t.Errorf("level %s, want %s (%s)", r.Verdict.Level, tc.level, r.Verdict.Reason)
			}
			if r.Log.OtherNetNSEvents != tc.other {
				t.Errorf("other_netns_events %d, want %d", r.Log.OtherNetNSEvents, tc.other)
			}
			switch {
			case tc.reasonHas == "":
				if strings.Contains(r.Verdict.Reason, "namespace") || strings.Contains(r.Verdict.Reason, "--all-netns") {
					t.Errorf("no other namespace's events, yet: %q", r.Verdict.Reason)
				}
			case tc.level == Healthy:
				// The healthy reason, then the hint.
				want := "table 0.38% full (1000 of 262144), no drops" + tc.reasonHas
				if r.Verdict.Reason != want {
					t.Errorf("reason %q,\nwant   %q", r.Verdict.Reason, want)
				}
			default:
				if !strings.HasSuffix(r.Verdict.Reason, tc.reasonHas) {
					t.Errorf("reason %q should end with %q", r.Verdict.Reason, tc.reasonHas)
				}
			}
			j, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var back struct {
				Log struct {
					Other *int `json:"other_netns_events"`
				} `json:"log"`
			}
			if err := json.Unmarshal(j, &back); err != nil || back.Log.Other == nil || *back.Log.Other != tc.other {
				t.Errorf("JSON log.other_netns_events: %v (err %v), want %d", back.Log.Other, err, tc.other)
			}
		})
	}
}
