package watch

import (
	"fmt"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
)

// counters is one refresh's cheap read of a namespace: a handful of
// small procfs files, never the entries.
type counters struct {
	at                  time.Time
	count, max, buckets int64 // -1: unknown
	// events is net.netfilter.nf_conntrack_events (-1: unknown): 0 means
	// the kernel sends no events in this namespace.
	events   int64
	stats    *conntrack.Stats // summed over the CPUs; nil when unknown
	statsErr error
}

// readCounters reads the namespace at path ("" = the caller's) with
// host.ReadTableCounters: the sysctls and the per-CPU counters of
// /proc/net/stat/nf_conntrack on a thread inside it, the counters over
// ctnetlink (netlinkStats) where that file does not exist (kernels built
// without CONFIG_NF_CONNTRACK_PROCFS). The error is for a namespace that
// cannot be entered; it wraps host.ErrEnterNetNS then.
func readCounters(path string, netlinkStats func() ([]conntrack.Stats, error)) (counters, error) {
	var overNetlink func() ([]conntrack.Stats, error)
	if netlinkStats != nil {
		overNetlink = func() ([]conntrack.Stats, error) {
			per, err := netlinkStats()
			if err != nil {
				return nil, fmt.Errorf("no /proc/net/stat/nf_conntrack, and over netlink: %w", err)
			}
			return per, nil
		}
	}
	t, err := host.ReadTableCounters(path, overNetlink)
	c := counters{at: t.At, count: t.Count, max: t.Max, buckets: t.Buckets, events: t.Events, stats: t.Stats, statsErr: t.StatsErr}
	return c, err
}

// rates are per-second rates of the per-CPU counters between two
// samples; -1 where unknown. The insert counter is no measure of new
// entries: kernels since 5.x count only the entries made over netlink
// (conntrack -I, -R) in it, so new entries come from the events or the
// listings instead.
type rates struct {
	drop, earlyDrop, insertFailed float64
}

var unknownRates = rates{drop: -1, earlyDrop: -1, insertFailed: -1}

// rateBetween returns the rates between two samples of the counters.
func rateBetween(prev, cur *counters) rates {
	if prev == nil || prev.stats == nil || cur.stats == nil {
		return unknownRates
	}
	dt := cur.at.Sub(prev.at).Seconds()
	if dt <= 0 {
		return unknownRates
	}
	rate := func(f conntrack.StatField) float64 {
		a, okA := prev.stats.Get(f)
		b, okB := cur.stats.Get(f)
		switch {
		case !okA || !okB:
			return -1
		case b < a: // a counter reset (a CPU went offline): no rate this time
			return 0
		}
		return float64(b-a) / dt
	}
	return rates{drop: rate(conntrack.StatDrop), earlyDrop: rate(conntrack.StatEarlyDrop), insertFailed: rate(conntrack.StatInsertFailed)}
}

// growth keeps recent samples of the entry count, for the time until the
// table is full.
type growth struct {
	window  time.Duration
	samples []countSample
}

type countSample struct {
	at    time.Time
	count int64
}

// add records a sample and forgets those older than the window.
func (g *growth) add(at time.Time, count int64) {
	g.samples = append(g.samples, countSample{at, count})
	i := 0
	for i < len(g.samples) && at.Sub(g.samples[i].at) > g.window {
		i++
	}
	g.samples = append(g.samples[:0], g.samples[i:]...)
}

// slope is the least-squares growth of the count in entries per second
// over the window; ok is false with fewer than three samples.
func (g *growth) slope() (perSec float64, ok bool) {
	n := len(g.samples)
	if n < 3 {
		return 0, false
	}
	t0 := g.samples[0].at
	var sx, sy, sxx, sxy float64
	for _, s := range g.samples {
		x, y := s.at.Sub(t0).Seconds(), float64(s.count)
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	den := float64(n)*sxx - sx*sx
	if den <= 0 {
		return 0, false
	}
	return (float64(n)*sxy - sx*sy) / den, true
}

// timeToFull is the time until count reaches max at the recent growth:
// 0 when full now, -1 when not growing or not known.
func (g *growth) timeToFull(count, max int64) time.Duration {
	switch {
	case count < 0 || max <= 0:
		return -1
	case count >= max:
		return 0
	}
	s, ok := g.slope()
	if !ok || s <= 0 {
		return -1
	}
	d := float64(max-count) / s * float64(time.Second)
	if d > float64(1<<62) {
		return -1 // effectively never
	}
	return time.Duration(d)
}
