package analyze

import (
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/host"
)

// TestTableFullCountsOwnLogEvents: namespace demo got inode 4026532177
// after an earlier namespace with that number logged 21 "table full"
// events; demo then logged 10 of its own, another namespace (web) 2 and
// the initial namespace 1 (the unnamed message: this kernel names the
// other namespaces). The log summary is split as host.ParseKernelLogNetNS
// splits it. table-full must count demo's 10 events, with demo's own
// first and last times — not 31, 33 or 11, and not another namespace's
// later event as "last".
func TestTableFullCountsOwnLogEvents(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 5, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	snap := func() *host.Snapshot {
		s := baseSnapshot()
		s.NetNS = host.NetNS{Name: "demo", Path: "/run/netns/demo", Inode: 4026532177, Created: at(200)}
		s.Settings.Count = 1000
		s.Log = host.LogSummary{Source: "/dev/kmsg", TableFullEvents: 21 + 10 + 2 + 1, First: at(100), Last: at(3000),
			NoNetNS: 1, NoNetNSFirst: at(150), NoNetNSLast: at(150),
			ByNetNS: []host.NetNSCount{
				{Inode: 4026532177, Count: 21, First: at(100), Last: at(120), Gone: true, ReusedBy: "demo"},
				{Inode: 4026532177, Name: "demo", Count: 10, First: at(300), Last: at(309)},
				{Inode: 4026532400, Name: "web", Count: 2, First: at(150), Last: at(3000)},
			}}
		return s
	}

	// Ten minutes after demo's last event: table full within the last hour.
	r := Analyze(snap(), nil, at(309).Add(10*time.Minute))
	f := tableFullOf(r)
	if f == nil {
		t.Fatalf("no table-full finding: %v", ids(r))
	}
	want := "table full within the last hour: 10 kernel log events, last at 2026-11-21T05:05:09Z"
	if f.Severity != Critical || f.Summary != want {
		t.Errorf("%s %q, want critical %q", f.Severity, f.Summary, want)
	}
	if f.Evidence["log_events"] != 10 || f.Evidence["log_events_before_netns_created"] != 21 ||
		f.Evidence["log_first"] != "2026-11-21T05:05:00Z" || f.Evidence["log_last"] != "2026-11-21T05:05:09Z" {
		t.Errorf("evidence %v", f.Evidence)
	}

	// Two hours after demo's last event, 40 minutes after web's: demo's
	// table was full, but not within the last hour.
	r = Analyze(snap(), nil, at(309).Add(2*time.Hour))
	f = tableFullOf(r)
	if f == nil || f.Severity != Warning || !strings.HasPrefix(f.Summary, `the kernel logged 10 "table full, dropping packet" events (last 2026-11-21T05:05:09Z)`) {
		t.Errorf("two hours later: %+v", f)
	}

	// Before demo logged anything: only the gone namespace's events, which
	// are not demo's.
	s := snap()
	s.Log.ByNetNS = append(s.Log.ByNetNS[:1], s.Log.ByNetNS[2])
	s.Log.TableFullEvents -= 10
	if f := tableFullOf(Analyze(s, nil, at(250))); f != nil {
		t.Errorf("demo blamed for a gone namespace's events: %+v", f)
	}
}

func tableFullOf(r *Report) *Finding {
	for i := range r.Findings {
		if r.Findings[i].ID == "table-full" {
			return &r.Findings[i]
		}
	}
	return nil
}
