package analyze

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/ctdoctor/ctdoctor/host"
)

// A rule inspects the report being built and returns a finding or nil.
type rule func(*ruleContext) *Finding

// rules is the catalogue, evaluated in order; findings are then sorted by severity.
var rules = []rule{
	ruleTableFull, ruleTableNearFull, ruleNetNSNearFull,
	ruleInsertFailed, ruleChainTooLong, ruleHashChainsLong, ruleMaxBucketsRatio,
	ruleUnrepliedFlood, ruleTimeWaitDominant, ruleLocalPortsExhausted, ruleLoopbackTracked, ruleBusyPort,
	ruleEstablishedTimeoutLong, ruleLegacy, ruleKubeProxy, ruleStatsUnavailable,
}

type ruleContext struct {
	snap     *host.Snapshot
	r        *Report
	kv       KernelVersion
	perEntry int64
	now      time.Time
	size     *Sizing // the report's sizing proposal, see sizing()
}

func severityRank(s string) int {
	switch s {
	case Critical:
		return 0
	case Warning:
		return 1
	}
	return 2
}

func sortFindings(f []Finding) {
	slices.SortStableFunc(f, func(a, b Finding) int { return cmp.Compare(severityRank(a.Severity), severityRank(b.Severity)) })
}

// verdict is the report's one-line answer: the most severe warning or
// critical finding, else healthy. Table-full events that the kernel log
// attributes to other network namespaces do not change the level (this
// namespace's table is the one diagnosed) but are named in the reason:
// a healthy verdict must not hide that a neighbour is dropping packets.
func verdict(r *Report) Verdict {
	v := Verdict{Level: Healthy}
	for _, f := range r.Findings {
		if f.Severity == Critical || f.Severity == Warning {
			v = Verdict{Level: f.Severity, Reason: f.Summary}
			break
		}
	}
	if v.Reason == "" {
		v.Reason = "the conntrack table has room and no packets are being dropped"
		if r.Table.Max <= 0 {
			v.Reason = fmt.Sprintf("no problem found in the %d entries listed (table size and counters unknown)", r.Breakdown.Total)
		} else if r.Table.Count >= 0 {
			v.Reason = fmt.Sprintf("table %s full (%d of %d), no drops", pct(r.Table.Usage), r.Table.Count, r.Table.Max)
		}
	}
	if n := r.Log.OtherNetNSEvents; n > 0 {
		events := plural(n, "\"table full\" event", "\"table full\" events")
		gone := 0
		for _, c := range r.Log.NetNS {
			if c.Gone {
				gone += c.Count
			}
		}
		switch {
		case gone >= n:
			v.Reason += fmt.Sprintf("; the kernel log holds %s of network namespaces that no longer exist", events)
			return v
		case r.Host.NetNSInode == 0:
			v.Reason += fmt.Sprintf("; the kernel log holds %s naming a network namespace, and this one's number is unknown — run ctdoctor --all-netns on the host to check them", events)
		case len(r.Namespaces) > 0:
			v.Reason += fmt.Sprintf("; the kernel log holds %s of other network namespaces (see the namespaces below)", events)
		default:
			v.Reason += fmt.Sprintf("; the kernel log holds %s of other network namespaces — run ctdoctor --all-netns on the host to check them", events)
		}
	}
	return v
}

// otherNetNSLogEvents counts the kernel log's table-full events that name
// a network namespace and are not this one's: those of other namespaces
// and of an earlier namespace with this one's number.
func (c *ruleContext) otherNetNSLogEvents() int {
	mine, unattributed, _ := c.nsLogEvents()
	return max(c.snap.Log.TableFullEvents-mine-unattributed, 0)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func pct(x float64) string {
	switch {
	case x >= 0.995 && x < 1:
		return fmt.Sprintf("%.1f%%", x*100)
	case x > 0 && x < 0.01:
		return fmt.Sprintf("%.2f%%", x*100)
	}
	return fmt.Sprintf("%.0f%%", x*100)
}

func share(part, total int64) float64 {
	if total <= 0 {
		return 0
	}
	return float64(part) / float64(total)
}

// sysctlKey returns the sysctl name of a conntrack setting ("max",
// "tcp_timeout_established") on this host: net.netfilter.nf_conntrack_* on
// nf_conntrack kernels, the ip_conntrack names on legacy ones.
func (c *ruleContext) sysctlKey(key string) string {
	if c.snap.Settings.Legacy {
		if key == "max" {
			return "net.ipv4.ip_conntrack_max"
		}
		return "net.ipv4.netfilter.ip_conntrack_" + key
	}
	return "net.netfilter.nf_conntrack_" + key
}

// timeoutChanges returns the changes that lower conntrack timeouts (or
// other per-namespace sysctls) to the proposed values, leaving out those
// already at or below them.
func (c *ruleContext) timeoutChanges(reason string, kv ...any) []Change {
	var out []Change
	for i := 0; i+1 < len(kv); i += 2 {
		setting, proposed := kv[i].(string), kv[i+1].(int64)
		cur, ok := c.snap.Settings.Timeouts[setting]
		if !ok {
			cur, ok = c.snap.Settings.Switches[setting]
		}
		if !ok {
			cur = -1
		}
		if ok && cur >= 0 && cur <= proposed {
			continue
		}
		out = append(out, Change{Kind: ChangeSysctl, Setting: setting, Key: c.sysctlKey(setting), Current: cur,
			Proposed: proposed, Scope: "netns", Reason: reason})
	}
	return out
}

// notrackChange is the change that stops tracking the matched traffic.
func notrackChange(m TrafficMatch, reason string) []Change {
	return []Change{{Kind: ChangeNotrack, Scope: "netns", Match: &m, Current: -1, Proposed: -1, Reason: reason}}
}

// HumanBytes formats a byte count with binary units ("66.0 MiB").
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func rate(r *Report, name string) (float64, bool) {
	v, ok := r.Stats.PerSecond[name]
	return v, ok
}
