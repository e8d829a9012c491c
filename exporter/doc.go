// Package exporter is ctdoctor's Prometheus exporter: an [Exporter] is a
// prometheus.Collector for the conntrack tables of one or more network
// namespaces (the exporter's own by default, those named in
// [Options].NetNS, or every namespace of the host with AllNetNS,
// discovered again as namespaces come and go), and [Exporter.Handler]
// serves it with a landing page.
//
// # What it exports
//
// Every series carries a netns label (the name given, the name in
// /run/netns, "pid:N (comm)" for an unnamed namespace, "init").
//
// Read on every scrape:
//
//	ctdoctor_conntrack_entries                    gauge    nf_conntrack_count
//	ctdoctor_conntrack_entries_limit              gauge    nf_conntrack_max (global)
//	ctdoctor_conntrack_buckets                    gauge    nf_conntrack_buckets
//	ctdoctor_conntrack_usage_ratio                gauge    entries / limit
//	ctdoctor_conntrack_stat_<name>_total          counter  each per-CPU counter the kernel has, summed
//	                                                       over CPUs, named as `conntrack -S` names it
//	                                                       (drop, early_drop, insert_failed,
//	                                                       clash_resolve, chaintoolong, invalid, …),
//	                                                       matched by header name in
//	                                                       /proc/net/stat/nf_conntrack, or over
//	                                                       ctnetlink where that file does not exist
//	ctdoctor_conntrack_cpu_stat_<name>_total{cpu} counter  the same per CPU, with --per-cpu (Options.PerCPU)
//	ctdoctor_conntrack_stats_info{source}         gauge    1; source is "proc" or "netlink"
//	ctdoctor_conntrack_kernel_log_table_full_events_total  counter  the kernel log's "table full,
//	                                                       dropping packet" events of the namespace
//
// Cached from the background listing (every [Options].BreakdownInterval,
// 30 s by default; the HELP text says so):
//
//	ctdoctor_conntrack_listed_entries             gauge    entries the listing read
//	ctdoctor_conntrack_protocol_entries{protocol} gauge    tcp, udp, icmp, icmpv6 always, others when present
//	ctdoctor_conntrack_tcp_state_entries{state}   gauge    every conntrack TCP state, 0 included
//	ctdoctor_conntrack_assured_entries            gauge
//	ctdoctor_conntrack_unreplied_entries          gauge
//	ctdoctor_conntrack_loopback_entries           gauge
//	ctdoctor_conntrack_nat_entries                gauge
//	ctdoctor_conntrack_service_entries{service}   gauge    top K "proto/port" plus "other" (adds up to listed)
//	ctdoctor_finding_active{id,severity}          gauge    0/1 for every id and severity of analyze.Catalogue
//	ctdoctor_conntrack_time_to_full_seconds       gauge    at the growth rate between two listings;
//	                                                       0 when full, absent when not growing
//
// About the exporter itself:
//
//	ctdoctor_exporter_up{collector,netns}                 gauge  table, stats, breakdown, kernel_log (netns "")
//	ctdoctor_exporter_scrape_duration_seconds{collector,netns}  gauge
//	ctdoctor_exporter_breakdown_timestamp_seconds          gauge  when the cached breakdown was taken
//	ctdoctor_exporter_breakdown_duration_seconds           gauge  what the last listing took
//	ctdoctor_exporter_namespaces                           gauge  namespaces watched
//
// # Cardinality budget
//
// Per namespace, at most: 4 table gauges, 18 counters and 1 source series,
// 1 log counter, 1 listed gauge, 4 protocols (more only for protocols
// present: at most 256), 11 TCP states, 4 flag gauges, K+1 services
// ([Options].TopServices, default 10, at most 100), 28 finding series (the
// sum of every catalogue id's severities), 1 time to full and 7 exporter
// series: about 90 series with the defaults, 180 at K = 100 (and with
// PerCPU, 17 more per CPU). Namespaces are bounded by [Options].MaxNetNS
// (256 by default). No label carries an address, so the budget does not
// grow with traffic.
//
// # Cost model
//
// A scrape reads, per namespace, three sysctl files and
// /proc/net/stat/nf_conntrack on an OS thread that enters the namespace
// (setns) and leaves it: microseconds, whatever the table size, at most 4
// namespaces at once. Scrapes that arrive while a collection runs wait for
// it and share its result, so N concurrent scrapers cost one read. The
// breakdown needs every entry: a background goroutine runs ctdoctor's
// diagnosis (doctor.Run: a streaming netlink dump, a second counter
// sample one second later for rates, the kernel log) on one namespace at
// a time and caches the resulting metrics; a scrape never waits for it
// and never lists entries. [Options].Diagnose moves that diagnosis
// elsewhere: `ctdoctor exporter` runs it as `ctdoctor -o json` in a child
// process at nice 10, so that it yields the CPU to scrapes and its memory
// is returned when it ends. Memory: one listing at a time, streamed
// without keeping entries (analyze.Accumulator grows with distinct
// addresses and services, not entries), plus the cached metrics (about
// 90 values per namespace) and the kernel log's event runs (bounded:
// 1024 runs per namespace inode, 4096 inodes).
//
// # Privileges
//
// See [Privileges]: the table size and procfs counters need none; the
// listing and the netlink counters need CAP_NET_ADMIN; other namespaces
// need CAP_SYS_ADMIN; the kernel log may need CAP_SYSLOG. What cannot be
// read is ctdoctor_exporter_up 0 for its collector, and the rest goes on.
package exporter
