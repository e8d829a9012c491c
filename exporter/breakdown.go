package exporter

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/doctor"
)

// counterSampleInterval is the time between the two counter samples a
// background diagnosis takes for rates (the drop rate of table-full),
// overlapped with the listing.
const counterSampleInterval = time.Second

// CounterSampleInterval is the interval an Options.Diagnose should use
// between its two counter samples, as the in-process diagnosis does.
const CounterSampleInterval = counterSampleInterval

// alwaysProtocols are exported with 0 when the table holds none, so that
// their series do not come and go.
var alwaysProtocols = []string{"tcp", "udp", "icmp", "icmpv6"}

// breakdownState is the cached result of a namespace's last background
// listing.
type breakdownState struct {
	done    bool // a listing has finished
	ok      bool // and succeeded
	reason  string
	metrics []prometheus.Metric
	// The count and time of the last listing, for the growth rate.
	prevCount int64
	prevAt    time.Time
}

// breakdownLoop lists every namespace's table, one at a time (so that the
// memory of only one listing is held at any moment), then waits for the
// next interval.
func (e *Exporter) breakdownLoop(ctx context.Context) {
	t := time.NewTicker(e.opt.BreakdownInterval)
	defer t.Stop()
	for {
		for _, tg := range e.currentTargets() {
			if ctx.Err() != nil {
				return
			}
			e.breakdownOnce(ctx, tg)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// breakdownOnce runs ctdoctor's diagnosis on one namespace and caches its
// metrics.
func (e *Exporter) breakdownOnce(ctx context.Context, t *target) {
	if e.listingHook != nil {
		e.listingHook()
	}
	start := time.Now()
	var rep *analyze.Report
	err := t.err
	if err == nil {
		rep, err = e.diagnose(ctx, t.path)
	}
	took := time.Since(start)
	if ctx.Err() != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	key := t.key()
	st := e.bd[key]
	if st == nil {
		if !e.watching(key) {
			return // the namespace went away during the listing
		}
		st = &breakdownState{prevCount: -1}
		e.bd[key] = st
	}
	st.done = true
	if err != nil {
		if st.ok || st.reason != err.Error() {
			e.log.Warn("background listing failed", "netns", t.label, "err", err)
		}
		st.ok, st.reason, st.metrics = false, err.Error(), nil
		return
	}
	ms, ok, reason := e.breakdownMetrics(t.label, rep, st, took)
	if !ok && (st.ok || st.reason != reason) {
		e.log.Warn("background listing incomplete", "netns", t.label, "reason", reason)
	}
	st.ok, st.reason, st.metrics = ok, reason, ms
}

// diagnose runs ctdoctor's diagnosis of one namespace: Options.Diagnose,
// else doctor.Run in this process.
func (e *Exporter) diagnose(ctx context.Context, nsPath string) (*analyze.Report, error) {
	if e.opt.Diagnose != nil {
		return e.opt.Diagnose(ctx, nsPath, e.opt.TopServices)
	}
	// The metrics need the findings, not their fixes: no planning (no ruleset read).
	res, err := doctor.Run(ctx, doctor.Input{NetNS: nsPath}, doctor.Options{Interval: counterSampleInterval, Top: e.opt.TopServices, NoPlan: true})
	if err != nil {
		return nil, err
	}
	return res.Report, nil
}

// watching reports whether key is a current target (e.mu held).
func (e *Exporter) watching(key string) bool {
	for _, t := range e.targets {
		if t.key() == key {
			return true
		}
	}
	return false
}

// breakdownMetrics turns a diagnosis into the cached metrics; ok is false
// (with the reason) when the entries could not be listed, in which case
// only the findings, which need no entries to be meaningful, are kept.
func (e *Exporter) breakdownMetrics(label string, rep *analyze.Report, st *breakdownState, took time.Duration) (out []prometheus.Metric, ok bool, reason string) {
	d := e.descs
	out = append(out, gauge(d.bdDuration, took.Seconds(), label))
	ok = rep.Listing == nil || rep.Listing.Read
	if !ok {
		reason = rep.Listing.Detail
	}
	if ok && rep.Listing != nil && rep.Listing.Reason == analyze.ListingFailed {
		ok, reason = false, rep.Listing.Detail
	}
	// Findings: every id and severity, 1 for the one reported.
	active := map[string]string{}
	for _, f := range rep.Findings {
		active[f.ID] = f.Severity
	}
	for _, spec := range analyze.Catalogue() {
		for _, sev := range spec.Severities {
			v := 0.0
			if active[spec.ID] == sev {
				v = 1
			}
			out = append(out, gauge(d.finding, v, label, spec.ID, sev))
		}
	}
	// Time to full from the growth between two listings.
	t := rep.Table
	now := rep.GeneratedAt
	if t.Count >= 0 && t.Max > 0 {
		if t.Count >= t.Max {
			out = append(out, gauge(d.timeToFull, 0, label))
		} else if st.prevCount >= 0 && now.After(st.prevAt) {
			rate := float64(t.Count-st.prevCount) / now.Sub(st.prevAt).Seconds()
			if rate > 0 {
				out = append(out, gauge(d.timeToFull, float64(t.Max-t.Count)/rate, label))
			}
		}
		st.prevCount, st.prevAt = t.Count, now
	}
	if !ok {
		return out, false, reason
	}
	b := rep.Breakdown
	out = append(out, gauge(d.listed, float64(b.Total), label),
		gauge(d.assured, float64(b.Status["assured"]), label),
		gauge(d.unreplied, float64(b.Status["unreplied"]), label),
		gauge(d.loopback, float64(b.Loopback), label),
		gauge(d.nat, float64(b.NAT), label))
	protos := map[string]int64{}
	for _, p := range alwaysProtocols {
		protos[p] = 0
	}
	for p, n := range b.L4 {
		protos[p] += n
	}
	for p, n := range protos {
		out = append(out, gauge(d.protocol, float64(n), label, p))
	}
	for s := conntrack.TCPState(0); s < conntrack.TCPStateCount; s++ {
		out = append(out, gauge(d.tcpState, float64(b.TCPState[s.String()]), label, s.String()))
	}
	var top int64
	for i, s := range b.TopServices {
		if i >= e.opt.TopServices {
			break
		}
		top += s.Count
		out = append(out, gauge(d.service, float64(s.Count), label, fmt.Sprintf("%s/%d", s.Proto, s.Port)))
	}
	out = append(out, gauge(d.service, float64(b.Total-top), label, "other"))
	out = append(out, gauge(d.bdTimestamp, float64(now.UnixNano())/1e9, label))
	return out, true, ""
}

// cachedBreakdown returns the namespace's cached breakdown metrics with
// the breakdown collector's up (nothing before its first listing ends).
func (e *Exporter) cachedBreakdown(t *target) []prometheus.Metric {
	if e.opt.BreakdownInterval < 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.bd[t.key()]
	if st == nil || !st.done {
		return nil
	}
	up := 0.0
	if st.ok {
		up = 1
	}
	out := make([]prometheus.Metric, 0, len(st.metrics)+1)
	out = append(out, st.metrics...)
	return append(out, gauge(e.descs.up, up, "breakdown", t.label))
}
