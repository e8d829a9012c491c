package analyze

import (
	"fmt"
	"strings"
	"time"
)

// nsLogEvents counts the log's table-full events that concern this
// namespace (host.LogSummary.EventsOf): mine are its own; unattributed
// name no namespace on a kernel that names none, so they may be anyone's;
// stale are an earlier namespace's that had this one's inode number
// (numbers are reused once a namespace is gone).
func (c *ruleContext) nsLogEvents() (mine, unattributed, stale int) {
	e := c.snap.Log.EventsOf(c.snap.NetNS)
	return e.Own, e.Unnamed, e.Before
}

func ruleTableFull(c *ruleContext) *Finding {
	r := c.r
	t := r.Table
	mine, unattributed, stale := c.nsLogEvents()
	events := mine + unattributed
	// The first and last of these events, not of the whole log's.
	logSpan := c.snap.Log.EventsOf(c.snap.NetNS)
	logFirst, logLast := logStamp(logSpan.First), logStamp(logSpan.Last)
	dropRate, haveRate := rate(r, "drop")
	full := t.Max > 0 && t.Count >= t.Max
	recentLog := events > 0 && !logSpan.Last.IsZero() && c.now.Sub(logSpan.Last) < time.Hour
	if !full && r.Stats.Drop == 0 && events == 0 {
		return nil
	}
	sev := Warning
	summary := fmt.Sprintf("the table was full at some point: %d packets dropped since boot", r.Stats.Drop)
	switch {
	case full:
		sev = Critical
		summary = fmt.Sprintf("table full: %d entries, limit %d — new connections are being dropped", t.Count, t.Max)
	case haveRate && dropRate > 0:
		sev = Critical
		summary = fmt.Sprintf("table full: dropping %.1f packets/s (%d since boot)", dropRate, r.Stats.Drop)
	case recentLog:
		sev = Critical
		summary = fmt.Sprintf("table full within the last hour: %d kernel log events, last at %s", events, logLast)
	case r.Stats.Drop == 0:
		summary = fmt.Sprintf("the kernel logged %d \"table full, dropping packet\" events (last %s)", events, logLast)
	}
	ev := map[string]any{"count": t.Count, "max": t.Max, "usage": round3(t.Usage),
		"drop": r.Stats.Drop, "early_drop": r.Stats.EarlyDrop, "log_events": events}
	if haveRate {
		ev["drop_per_second"] = round3(dropRate)
		if v, ok := rate(r, "early_drop"); ok {
			ev["early_drop_per_second"] = round3(v)
		}
	}
	if events > 0 && !logSpan.First.IsZero() {
		ev["log_first"], ev["log_last"] = logFirst, logLast
	}
	if unattributed > 0 && mine > 0 {
		ev["log_events_other_netns"] = unattributed
	}
	if stale > 0 {
		ev["log_events_before_netns_created"] = stale
	}
	fixes := []string{"# 1. find what fills the table (the breakdown above) and stop tracking what needs no state — see the other findings"}
	fixes = append(fixes, "# 2. give the table room (this only buys time while whatever fills the table keeps growing: a bigger table fills up later, it does not stop the cause):")
	fixes = append(fixes, c.limitNotes()...)
	at := len(fixes) // the planner's commands for the limit go here
	fixes = append(fixes, "# 3. shorten the timeouts of the states that dominate (see timewait-dominant / established-timeout-long / unreplied-flood)")
	return &Finding{ID: "table-full", Severity: sev, Summary: summary, Evidence: ev,
		Explanation: "Every connection the kernel tracks takes one entry in the conntrack table, which has a fixed limit " +
			"(nf_conntrack_max). When a new connection arrives and the table is full, the kernel first tries to evict " +
			"an entry that never got a reply (early drop); if it finds none, it drops the packet and logs " +
			"\"nf_conntrack: table full, dropping packet\". Clients see timeouts and retries while the server looks idle, " +
			"because the packets never reach it. The `drop` counter counts exactly these packets; `insert_failed` is something else.",
		Fixes: fixes, ChangesAt: at, Changes: c.sizingChanges(true)}
}

// logStamp formats a log event's time as the report does ("unknown" if zero).
func logStamp(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format(time.RFC3339)
}

func ruleTableNearFull(c *ruleContext) *Finding {
	t := c.r.Table
	if t.Max <= 0 || t.Count < 0 || t.Count >= t.Max || t.Usage < nearFullUsage {
		return nil
	}
	sev := Warning
	if t.Usage >= 0.9 {
		sev = Critical
	}
	fixes := append([]string{"# reduce what is tracked (see the other findings), or raise the limit:"}, c.limitNotes()...)
	return &Finding{ID: "table-near-full", Severity: sev,
		Summary:  fmt.Sprintf("table %s full (%d of %d): a traffic burst will start dropping packets", pct(t.Usage), t.Count, t.Max),
		Evidence: map[string]any{"count": t.Count, "max": t.Max, "usage": round3(t.Usage), "early_drop": c.r.Stats.EarlyDrop},
		Explanation: "The table is close to its limit. Once it is full, new connections are dropped unless an entry without " +
			"a reply can be evicted. Common alerting thresholds are 75% (node-mixin) and 90%/95% (netdata).",
		Fixes: fixes, ChangesAt: len(fixes), Changes: c.sizingChanges(true)}
}

func ruleNetNSNearFull(c *ruleContext) *Finding {
	var worst []map[string]any
	sev := ""
	for _, ns := range c.snap.AllNetNS {
		if ns.Max <= 0 || ns.Error != "" {
			continue
		}
		u := float64(ns.Count) / float64(ns.Max)
		if u < nearFullUsage {
			continue
		}
		s := Warning
		if u >= 0.9 {
			s = Critical
		}
		if sev == "" || severityRank(s) < severityRank(sev) {
			sev = s
		}
		worst = append(worst, map[string]any{"netns": ns.Name, "inode": ns.Inode, "count": ns.Count, "max": ns.Max, "usage": round3(u)})
	}
	if worst == nil {
		return nil
	}
	fixes := append([]string{fmt.Sprintf("# diagnose that namespace to see what fills it: ctdoctor --netns %s", nsArg(worst[0])),
		"# or raise the global limit, in the initial namespace (it applies to every namespace):"},
		c.limitNotes()...)
	return &Finding{ID: "netns-near-full", Severity: sev,
		Summary:  fmt.Sprintf("%d network namespace(s) near the global conntrack limit (first: %v at %v)", len(worst), worst[0]["netns"], pct(worst[0]["usage"].(float64))),
		Evidence: map[string]any{"namespaces": worst},
		Explanation: "Each network namespace (container, pod, VRF) counts its own entries, but all of them are compared with the " +
			"single global nf_conntrack_max. One busy container can hit the limit and drop its packets while the host's " +
			"own count looks small — which is why host-level monitoring misses it.",
		Fixes: fixes, ChangesAt: len(fixes), Changes: c.sizingChanges(true)}
}

func round3(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }

// nsArg is what to pass to --netns for a namespace row: its name when it
// has one from /run/netns, else its PID.
func nsArg(row map[string]any) string {
	name, _ := row["netns"].(string)
	if pid, ok := strings.CutPrefix(name, "pid:"); ok {
		pid, _, _ = strings.Cut(pid, " ")
		return pid
	}
	return name
}
