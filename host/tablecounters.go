package host

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// The files ReadTableCounters reads, in the namespace's view of /proc
// (current names first, then the legacy ip_conntrack ones). The
// statistics are relative to the thread's /proc/…/net directory.
var (
	countFiles    = []string{"/proc/sys/net/netfilter/nf_conntrack_count", "/proc/sys/net/ipv4/netfilter/ip_conntrack_count"}
	maxFiles      = []string{"/proc/sys/net/netfilter/nf_conntrack_max", "/proc/sys/net/nf_conntrack_max", "/proc/sys/net/ipv4/ip_conntrack_max", "/proc/sys/net/ipv4/netfilter/ip_conntrack_max"}
	bucketsFiles  = []string{"/proc/sys/net/netfilter/nf_conntrack_buckets", "/proc/sys/net/ipv4/netfilter/ip_conntrack_buckets"}
	eventsFiles   = []string{"/proc/sys/net/netfilter/nf_conntrack_events"}
	procStatFiles = []string{"stat/nf_conntrack", "stat/ip_conntrack"}
)

// TableCounters is one cheap read of a namespace's conntrack table by
// [ReadTableCounters]: a handful of small procfs files, never the entries.
type TableCounters struct {
	// At is when the files were read.
	At time.Time
	// Count, Max and Buckets are nf_conntrack_count, _max and _buckets;
	// -1 where unknown.
	Count, Max, Buckets int64
	// Events is net.netfilter.nf_conntrack_events (-1: unknown): 0 means
	// the kernel sends no events in this namespace.
	Events int64
	// Active is false when the namespace has no conntrack sysctls at all
	// (the module is not loaded, or nothing uses it): neither the count
	// file exists nor a max could be read.
	Active bool
	// StatsMissing says that /proc/net/stat/nf_conntrack (and the legacy
	// ip_conntrack) does not exist: a kernel built without
	// CONFIG_NF_CONNTRACK_PROCFS, or no conntrack in the namespace.
	StatsMissing bool
	// PerCPU are the per-CPU counters and Stats their sum; both nil when
	// unknown (StatsErr then says why, unless nothing was tried).
	PerCPU []conntrack.Stats
	Stats  *conntrack.Stats
	// StatsSource is where the counters came from: "proc" or "netlink".
	StatsSource string
	StatsErr    error
}

// ReadTableCounters reads count, max, buckets, the events switch and the
// per-CPU counters of the namespace at nsPath ("" is the caller's own).
// The sysctls and /proc/net/stat/nf_conntrack are read on a thread inside
// the namespace ([InNetNS]). Where the statistics file does not exist and
// netlinkStats is not nil, the counters come from netlinkStats instead
// (over ctnetlink, which needs CAP_NET_ADMIN); its error becomes StatsErr
// as it is. The error is for a namespace that cannot be entered; it wraps
// [ErrEnterNetNS] then.
func ReadTableCounters(nsPath string, netlinkStats func() ([]conntrack.Stats, error)) (TableCounters, error) {
	c := TableCounters{Count: -1, Max: -1, Buckets: -1, Events: -1}
	var statData []byte
	err := InNetNS(nsPath, func() error {
		var found bool
		c.Count, found = readFirstInt(countFiles)
		c.Max, _ = readFirstInt(maxFiles)
		c.Buckets, _ = readFirstInt(bucketsFiles)
		c.Events, _ = readFirstInt(eventsFiles)
		c.Active = found || c.Max >= 0
		procNet := "/proc/thread-self/net"
		if _, err := os.Stat(procNet); err != nil { // before Linux 3.17
			procNet = fmt.Sprintf("/proc/self/task/%d/net", unix.Gettid())
		}
		c.StatsMissing = true
		for _, rel := range procStatFiles {
			b, err := os.ReadFile(procNet + "/" + rel)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			c.StatsMissing = false
			if err != nil {
				c.StatsErr = fmt.Errorf("read /proc/net/%s: %w", rel, err)
				break
			}
			statData = b
			break
		}
		return nil
	})
	c.At = time.Now()
	if err != nil {
		return c, err
	}
	var per []conntrack.Stats
	switch {
	case statData != nil:
		per, err = ParseProcStats(bytes.NewReader(statData))
		if err != nil {
			c.StatsErr = fmt.Errorf("/proc/net/stat/nf_conntrack: %w", err)
		}
		c.StatsSource = "proc"
	case c.StatsMissing && netlinkStats != nil:
		per, c.StatsErr = netlinkStats()
		c.StatsSource = "netlink"
	}
	if c.StatsErr == nil && per != nil {
		s := conntrack.SumStats(per)
		c.Stats, c.PerCPU = &s, per
	} else {
		c.StatsSource = ""
	}
	return c, nil
}

// readFirstInt reads the first of the files that exists as one integer
// (-1 when it holds no number); found says whether one existed.
func readFirstInt(files []string) (v int64, found bool) {
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		v, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
		if err != nil {
			return -1, true
		}
		return v, true
	}
	return -1, false
}
