package exporter

import (
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// processCollector exports the standard process_* metrics of the exporter
// itself (CPU, resident and virtual memory, open and maximum file
// descriptors, start time) from /proc/self/stat and /proc/self/fd.
// client_golang's own process collector also parses the process's network
// counters on every scrape, which took more than the whole conntrack
// collection; these few reads are what the exporter needs to show its
// cost.
type processCollector struct {
	cpu, rss, vsize, fds, maxFDs, start *prometheus.Desc
	boot                                float64 // btime from /proc/stat
	pageSize                            float64
}

func newProcessCollector() *processCollector {
	c := &processCollector{
		cpu:      prometheus.NewDesc("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", nil, nil),
		rss:      prometheus.NewDesc("process_resident_memory_bytes", "Resident memory size in bytes.", nil, nil),
		vsize:    prometheus.NewDesc("process_virtual_memory_bytes", "Virtual memory size in bytes.", nil, nil),
		fds:      prometheus.NewDesc("process_open_fds", "Number of open file descriptors.", nil, nil),
		maxFDs:   prometheus.NewDesc("process_max_fds", "Maximum number of open file descriptors.", nil, nil),
		start:    prometheus.NewDesc("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", nil, nil),
		pageSize: float64(os.Getpagesize()),
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "btime "); ok {
				c.boot, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			}
		}
	}
	return c
}

func (c *processCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.cpu, c.rss, c.vsize, c.fds, c.maxFDs, c.start} {
		ch <- d
	}
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on every
// Linux architecture Go supports).
const clockTicks = 100

func (c *processCollector) Collect(ch chan<- prometheus.Metric) {
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) {
			f := strings.Fields(s[i+2:])
			// Fields after the command: state(0) … utime(11) stime(12) … starttime(19) vsize(20) rss(21).
			if len(f) > 21 {
				num := func(k int) float64 { v, _ := strconv.ParseFloat(f[k], 64); return v }
				ch <- counter(c.cpu, (num(11)+num(12))/clockTicks)
				ch <- gauge(c.vsize, num(20))
				ch <- gauge(c.rss, num(21)*c.pageSize)
				if c.boot > 0 {
					ch <- gauge(c.start, c.boot+num(19)/clockTicks)
				}
			}
		}
	}
	if d, err := os.Open("/proc/self/fd"); err == nil {
		names, err := d.Readdirnames(-1)
		d.Close()
		if err == nil {
			ch <- gauge(c.fds, float64(len(names)-1)) // less the one reading the directory
		}
	}
	if b, err := os.ReadFile("/proc/self/limits"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					if v, err := strconv.ParseFloat(f[0], 64); err == nil {
						ch <- gauge(c.maxFDs, v)
					}
				}
			}
		}
	}
}
