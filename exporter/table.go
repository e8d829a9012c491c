package exporter

import (
	"errors"
	"fmt"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/host/ctnetlink"
)

// tableRead is what one scrape reads of a namespace: a handful of small
// procfs files, never the entries.
type tableRead struct {
	// active is false when the namespace has no conntrack sysctls at all
	// (the module is not loaded, or nothing uses it).
	active              bool
	count, max, buckets int64 // -1: unknown
	stats               *conntrack.Stats
	perCPU              []conntrack.Stats
	statsSource         string // "proc" or "netlink"
	statsErr            error
}

// readTable reads count, max, buckets and the per-CPU counters of the
// namespace at nsPath ("" is the exporter's own) with
// host.ReadTableCounters: the sysctls and the procfs statistics are read
// on a thread inside the namespace; where the statistics file does not
// exist (kernels built without CONFIG_NF_CONNTRACK_PROCFS) they come over
// ctnetlink, which needs CAP_NET_ADMIN. A namespace without conntrack
// sysctls is not asked over ctnetlink (that would load the module). The
// error is for a namespace that cannot be entered.
func readTable(nsPath string) (tableRead, error) {
	c, err := host.ReadTableCounters(nsPath, nil)
	r := tableRead{active: c.Active, count: c.Count, max: c.Max, buckets: c.Buckets}
	if err != nil || !r.active {
		return r, err
	}
	r.stats, r.perCPU, r.statsSource, r.statsErr = c.Stats, c.PerCPU, c.StatsSource, c.StatsErr
	if c.StatsMissing {
		per, err := netlinkStats(nsPath)
		if err != nil {
			r.statsErr = err
			return r, nil
		}
		t := conntrack.SumStats(per)
		r.stats, r.statsSource, r.perCPU = &t, "netlink", per
	}
	return r, nil
}

// netlinkStats reads the per-CPU counters over ctnetlink (what
// `conntrack -S` shows).
func netlinkStats(nsPath string) ([]conntrack.Stats, error) {
	c, err := ctnetlink.Open(nsPath)
	if err != nil {
		return nil, fmt.Errorf("no /proc/net/stat/nf_conntrack, and ctnetlink: %w", err)
	}
	defer c.Close()
	st, err := c.Stats()
	if err != nil {
		if errors.Is(err, ctnetlink.ErrPermission) {
			return nil, fmt.Errorf("no /proc/net/stat/nf_conntrack (kernel built without CONFIG_NF_CONNTRACK_PROCFS), and the counters over ctnetlink need CAP_NET_ADMIN: %w", err)
		}
		return nil, fmt.Errorf("no /proc/net/stat/nf_conntrack, and ctnetlink: %w", err)
	}
	return st, nil
}
