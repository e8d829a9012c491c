package sim

import (
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/host"
)

// SnapshotOf describes a tracker's table as ctdoctor reads a real host:
// the settings (count, max, buckets, timeouts), the statistics as one
// sample, Source "simulation". The host around it has Linux's default TCP
// settings (keepalive 7200 + 9 × 75 s, ports 32768–60999). name becomes the
// hostname; at is the time of the reading.
func SnapshotOf(t *engine.Tracker, name string, cpus int, at time.Time) *host.Snapshot {
	set := t.Settings()
	s := &host.Snapshot{Source: "simulation", Hostname: name, Kernel: "simulated", TakenAt: at,
		NetNS: host.NetNS{Name: "simulation", Init: true}, CPUs: max(cpus, 1),
		Settings: host.Settings{Count: int64(t.Count()), Max: set[engine.SetMax], Buckets: set[engine.SetBuckets],
			HashSize: set[engine.SetBuckets], Timeouts: map[string]int64{}, Switches: map[string]int64{}},
		TCP: host.TCPSysctls{KeepaliveTime: 7200, KeepaliveIntvl: 75, KeepaliveProbes: 9, FinTimeout: 60,
			TWReuse: 2, Retries2: 15, PortRangeLow: DefaultClientPortLo, PortRangeHigh: DefaultClientPortHi},
	}
	for k, v := range set {
		short := strings.TrimPrefix(k, "nf_conntrack_")
		switch {
		case k == engine.SetMax || k == engine.SetBuckets:
		case strings.Contains(short, "timeout"):
			s.Settings.Timeouts[short] = v
		default:
			s.Settings.Switches[short] = v
		}
	}
	per := t.Stats()
	s.Stats = &host.StatsRead{At: at, Source: "simulation", PerCPU: per, Total: conntrack.SumStats(per)}
	return s
}

// Snapshot describes the simulated table at the end of the run (see
// [SnapshotOf]); the counters are sampled twice, one step apart, so the
// report shows the drop rate at the end. base is the wall time the run is
// taken to have started at.
func (s *Simulator) Snapshot(base time.Time) *host.Snapshot {
	end := base.Add(s.sc.Duration)
	snap := SnapshotOf(s.et, s.sc.Name, s.sc.CPUs, end)
	if s.res != nil && len(s.res.Timeline) >= 2 {
		prev := s.penult
		snap.Stats2 = snap.Stats
		snap.Stats = &host.StatsRead{At: base.Add(s.penultAt), Source: "simulation", Total: prev}
	}
	return snap
}

// Breakdown runs ctdoctor's one-pass analysis over the tracker's entries.
func Breakdown(t *engine.Tracker, snap *host.Snapshot, top int) (*analyze.Breakdown, error) {
	acc := analyze.NewAccumulator()
	if top > 0 {
		acc.TopN = top
	}
	acc.IdleAbove, acc.IdleAfter = analyze.IdleWindow(snap)
	err := t.Flows(func(f *conntrack.Flow) error {
		acc.Add(f)
		return nil
	})
	b := acc.Breakdown()
	return &b, err
}

// Report diagnoses the simulated table at the end of the run as ctdoctor
// diagnoses a host: the same findings, verdict and fixes.
func (s *Simulator) Report(base time.Time, top int) (*analyze.Report, error) {
	snap := s.Snapshot(base)
	b, err := Breakdown(s.et, snap, top)
	if err != nil {
		return nil, err
	}
	return analyze.Analyze(snap, b, snap.TakenAt), nil
}
