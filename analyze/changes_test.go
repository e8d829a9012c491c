package analyze

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
)

// Every finding that prints a sysctl or NOTRACK fix also carries it as
// data (Finding.Changes), with this host's key names and current values,
// so the planner makes the same change the fix lines describe.
func TestFindingsCarryChanges(t *testing.T) {
	r := fixture(t, filepath.Join("../host/testdata/hosts", "centos5"))
	est := findChange(r, "established-timeout-long", "tcp_timeout_established")
	if est == nil {
		t.Fatalf("established-timeout-long has no change: %+v", r.Findings)
	}
	// CentOS 5: legacy names; 5 days now; 2 × keepalive (7875 s) is below a day, so a day.
	if est.Key != "net.ipv4.netfilter.ip_conntrack_tcp_timeout_established" || est.Current != 432000 || est.Proposed != 86400 || est.Scope != "netns" {
		t.Errorf("established change: %+v", est)
	}
	for _, f := range r.Findings {
		for _, c := range f.Changes {
			if c.Kind == ChangeSysctl && c.Current >= 0 && c.Proposed == c.Current {
				t.Errorf("%s proposes %s = %d, its current value", f.ID, c.Setting, c.Proposed)
			}
		}
	}

	// A TIME_WAIT table with the timeout already at 30 s: the finding stays,
	// the change does not (nothing to lower).
	for _, tw := range []struct {
		timeout int64
		want    bool
	}{{120, true}, {30, false}} {
		s := baseSnapshot()
		s.Settings.Timeouts["tcp_timeout_time_wait"] = tw.timeout
		a := NewAccumulator()
		for i := range 2000 {
			a.Add(tcpFlow("127.0.0.1", "127.0.0.1", 40000+uint16(i), 8080, conntrack.TCPTimeWait, 100))
		}
		b := a.Breakdown()
		r := Analyze(s, &b, time.Now())
		if f := findingOf(r, "timewait-dominant"); f == nil {
			t.Fatalf("timeout %d: no timewait-dominant", tw.timeout)
		}
		got := findChange(r, "timewait-dominant", "tcp_timeout_time_wait")
		if (got != nil) != tw.want || got != nil && (got.Proposed != 30 || got.Current != tw.timeout) {
			t.Errorf("time_wait timeout %d: change %+v, want one: %v", tw.timeout, got, tw.want)
		}
		lo := findChange(r, "loopback-tracked", "")
		if lo == nil || lo.Kind != ChangeNotrack || lo.Match == nil || !lo.Match.Loopback {
			t.Errorf("loopback-tracked change: %+v", lo)
		}
	}
}

func findingOf(r *Report, id string) *Finding {
	for i := range r.Findings {
		if r.Findings[i].ID == id {
			return &r.Findings[i]
		}
	}
	return nil
}

func findChange(r *Report, id, setting string) *Change {
	f := findingOf(r, id)
	if f == nil {
		return nil
	}
	for i := range f.Changes {
		if f.Changes[i].Setting == setting {
			return &f.Changes[i]
		}
	}
	return nil
}

// fixture diagnoses a fixture host as the CLI would.
func fixture(t *testing.T, dir string) *Report {
	t.Helper()
	opt := host.Options{Root: dir}
	s, err := host.Read(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	src, err := host.Entries(opt, s)
	if err != nil {
		t.Fatal(err)
	}
	a := NewAccumulator()
	a.IdleAbove, a.IdleAfter = IdleWindow(s)
	if err := src(func(f *conntrack.Flow) error { a.Add(f); return nil }); err != nil {
		t.Fatal(err)
	}
	b := a.Breakdown()
	return Analyze(s, &b, s.TakenAt)
}

// Loopback entries that are a small share of a full table still compete
// for the missing entries (and are dropped themselves): loopback-tracked
// fires under pressure, not on a table with room.
func TestLoopbackTrackedUnderPressure(t *testing.T) {
	for _, c := range []struct {
		count int64
		want  bool
	}{{262144, true}, {240000, true}, {131072, false}} {
		s := baseSnapshot()
		s.Settings.Count = c.count
		a := NewAccumulator()
		for i := range 2000 {
			a.Add(tcpFlow("10.1.0.1", "10.0.0.2", 1024+uint16(i), 443, conntrack.TCPEstablished, 400000))
		}
		for i := range 150 {
			a.Add(tcpFlow("127.0.0.1", "127.0.0.1", 40000+uint16(i), 8081, conntrack.TCPTimeWait, 100))
		}
		b := a.Breakdown()
		r := Analyze(s, &b, time.Now())
		f := findingOf(r, "loopback-tracked")
		if (f != nil) != c.want {
			t.Errorf("count %d of 262144: loopback-tracked %v, want %v", c.count, f != nil, c.want)
		}
		if f != nil && (len(f.Changes) != 1 || f.Changes[0].Match == nil || !f.Changes[0].Match.Loopback) {
			t.Errorf("count %d: changes %+v", c.count, f.Changes)
		}
	}
}
