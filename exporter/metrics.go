package exporter

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// Metric name prefixes.
const (
	nsConntrack = "ctdoctor_conntrack_"
	nsExporter  = "ctdoctor_exporter_"
)

// procHeader is the /proc/net/stat/nf_conntrack column of counters whose
// `conntrack -S` name differs.
var procHeader = map[conntrack.StatField]string{
	conntrack.StatClashResolve: "clashres",
	conntrack.StatChainTooLong: "chainlength",
	conntrack.StatError:        "icmp_error",
}

// statHelp explains the counters that matter most for a full table.
var statHelp = map[conntrack.StatField]string{
	conntrack.StatDrop:          "packets dropped because the table was full and no entry could be evicted",
	conntrack.StatEarlyDrop:     "entries evicted (not yet assured) to make room in a full table",
	conntrack.StatInsertFailed:  "entries that could not be inserted at confirm time: SNAT/DNS races or a too-long chain, not a full table",
	conntrack.StatClashResolve:  "insert clashes resolved without a drop",
	conntrack.StatChainTooLong:  "inserts refused because the hash chain was too long",
	conntrack.StatInvalid:       "packets that could not be tracked",
	conntrack.StatSearchRestart: "lookups restarted because of a concurrent hash resize",
	conntrack.StatFound:         "NAT tuple-taken hits",
	conntrack.StatInsert:        "entries inserted over ctnetlink",
	conntrack.StatError:         "ICMP errors that matched no entry",
}

// descs are the exporter's metric descriptions; the breakdown's HELP
// names the interval its values are cached for.
type descs struct {
	entries, limit, buckets, usage *prometheus.Desc
	statsInfo                      *prometheus.Desc
	stat                           [conntrack.NumStatFields]*prometheus.Desc
	cpuStat                        [conntrack.NumStatFields]*prometheus.Desc
	logEvents                      *prometheus.Desc

	listed, protocol, tcpState, assured, unreplied, loopback, nat *prometheus.Desc
	service, finding, timeToFull                                  *prometheus.Desc

	up, scrapeDuration, bdTimestamp, bdDuration, namespaces *prometheus.Desc
}

func newDescs(interval time.Duration) *descs {
	ns := []string{"netns"}
	d := &descs{
		entries:   prometheus.NewDesc(nsConntrack+"entries", "Entries in the namespace's conntrack table (nf_conntrack_count), read on every scrape.", ns, nil),
		limit:     prometheus.NewDesc(nsConntrack+"entries_limit", "The table's limit (nf_conntrack_max; one global limit that every namespace's count is compared with), read on every scrape.", ns, nil),
		buckets:   prometheus.NewDesc(nsConntrack+"buckets", "Hash table buckets (nf_conntrack_buckets), read on every scrape.", ns, nil),
		usage:     prometheus.NewDesc(nsConntrack+"usage_ratio", "Entries divided by the limit (0 to 1; 1 is full), read on every scrape.", ns, nil),
		statsInfo: prometheus.NewDesc(nsConntrack+"stats_info", "Where the per-CPU counters come from: source=\"proc\" (/proc/net/stat/nf_conntrack) or \"netlink\" (ctnetlink, needs CAP_NET_ADMIN). Always 1.", []string{"netns", "source"}, nil),
		logEvents: prometheus.NewDesc(nsConntrack+"kernel_log_table_full_events_total", "Kernel log \"table full, dropping packet\" events of this namespace, counted from the start of the kernel's ring buffer when the exporter started and followed since.", ns, nil),
	}
	for f := conntrack.StatField(0); f < conntrack.NumStatFields; f++ {
		if f == conntrack.StatEntries {
			continue // the count, repeated on every CPU: the entries gauge
		}
		help := fmt.Sprintf("The kernel's per-CPU conntrack counter %q, summed over CPUs", f.String())
		if h, ok := procHeader[f]; ok {
			help += fmt.Sprintf(" (column %q of /proc/net/stat/nf_conntrack)", h)
		}
		if s, ok := statHelp[f]; ok {
			help += ": " + s
		}
		d.stat[f] = prometheus.NewDesc(nsConntrack+"stat_"+f.String()+"_total", help+". Read on every scrape; only the counters this kernel has are exported.", ns, nil)
		d.cpuStat[f] = prometheus.NewDesc(nsConntrack+"cpu_stat_"+f.String()+"_total",
			fmt.Sprintf("The kernel's conntrack counter %q of each CPU (--per-cpu); ctdoctor_conntrack_stat_%s_total is their sum.", f.String(), f.String()),
			[]string{"netns", "cpu"}, nil)
	}
	cached := fmt.Sprintf(" Cached: counted by a background listing of the whole table every %s (--breakdown-interval), never during a scrape, so the value is up to %s plus one listing old (see ctdoctor_exporter_breakdown_timestamp_seconds). Listing the entries needs CAP_NET_ADMIN.", interval, interval)
	d.listed = prometheus.NewDesc(nsConntrack+"listed_entries", "Entries the last background listing read."+cached, ns, nil)
	d.protocol = prometheus.NewDesc(nsConntrack+"protocol_entries", "Entries by layer-4 protocol."+cached, []string{"netns", "protocol"}, nil)
	d.tcpState = prometheus.NewDesc(nsConntrack+"tcp_state_entries", "TCP entries by conntrack TCP state."+cached, []string{"netns", "state"}, nil)
	d.assured = prometheus.NewDesc(nsConntrack+"assured_entries", "Entries with the ASSURED flag (traffic seen both ways; early drop never evicts them)."+cached, ns, nil)
	d.unreplied = prometheus.NewDesc(nsConntrack+"unreplied_entries", "Entries that have seen no reply ([UNREPLIED])."+cached, ns, nil)
	d.loopback = prometheus.NewDesc(nsConntrack+"loopback_entries", "Entries between loopback addresses (they need no tracking)."+cached, ns, nil)
	d.nat = prometheus.NewDesc(nsConntrack+"nat_entries", "Entries with source or destination NAT."+cached, ns, nil)
	d.service = prometheus.NewDesc(nsConntrack+"service_entries", "Entries by service (protocol/destination port of the original direction): the top services, and service=\"other\" for every other entry, including protocols without ports; the values add up to the listed entries."+cached, []string{"netns", "service"}, nil)
	d.finding = prometheus.NewDesc("ctdoctor_finding_active", "1 when ctdoctor's diagnosis reports the finding with this severity, else 0; every finding id and severity is always present (the ids and their titles: ctdoctor exporter --help)."+cached, []string{"netns", "id", "severity"}, nil)
	d.timeToFull = prometheus.NewDesc(nsConntrack+"time_to_full_seconds", "Estimated seconds until the table reaches its limit at the growth rate between the last two background listings (0 when full now; absent when not growing)."+cached, ns, nil)
	d.up = prometheus.NewDesc(nsExporter+"up", "1 when the collector read its source on this scrape (for collector=\"breakdown\": the last background listing succeeded), 0 when it failed (see the exporter's log).", []string{"collector", "netns"}, nil)
	d.scrapeDuration = prometheus.NewDesc(nsExporter+"scrape_duration_seconds", "Time the collector took on this scrape.", []string{"collector", "netns"}, nil)
	d.bdTimestamp = prometheus.NewDesc(nsExporter+"breakdown_timestamp_seconds", "Unix time the cached breakdown was taken (the end of the last successful background listing).", ns, nil)
	d.bdDuration = prometheus.NewDesc(nsExporter+"breakdown_duration_seconds", "Time the last background listing and diagnosis of the namespace took.", ns, nil)
	d.namespaces = prometheus.NewDesc(nsExporter+"namespaces", "Network namespaces the exporter watches.", nil, nil)
	return d
}

// describe sends every description.
func (d *descs) describe(ch chan<- *prometheus.Desc) {
	for _, x := range []*prometheus.Desc{d.entries, d.limit, d.buckets, d.usage, d.statsInfo, d.logEvents,
		d.listed, d.protocol, d.tcpState, d.assured, d.unreplied, d.loopback, d.nat, d.service, d.finding,
		d.timeToFull, d.up, d.scrapeDuration, d.bdTimestamp, d.bdDuration, d.namespaces} {
		ch <- x
	}
	for _, x := range d.stat {
		if x != nil {
			ch <- x
		}
	}
	for _, x := range d.cpuStat {
		if x != nil {
			ch <- x
		}
	}
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}
