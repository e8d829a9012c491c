package exporter

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"

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

// The files read on every scrape, relative to the namespace's view of /proc.
var (
	countFiles   = []string{"/proc/sys/net/netfilter/nf_conntrack_count", "/proc/sys/net/ipv4/netfilter/ip_conntrack_count"}
	maxFiles     = []string{"/proc/sys/net/netfilter/nf_conntrack_max", "/proc/sys/net/nf_conntrack_max", "/proc/sys/net/ipv4/ip_conntrack_max", "/proc/sys/net/ipv4/netfilter/ip_conntrack_max"}
	bucketsFiles = []string{"/proc/sys/net/netfilter/nf_conntrack_buckets", "/proc/sys/net/ipv4/netfilter/ip_conntrack_buckets"}
	statFiles    = []string{"stat/nf_conntrack", "stat/ip_conntrack"}
)

// readTable reads count, max, buckets and the per-CPU counters of the
// namespace at nsPath ("" is the exporter's own). The sysctls and the
// procfs statistics are read on a thread inside the namespace; where the
// statistics file does not exist (kernels built without
// CONFIG_NF_CONNTRACK_PROCFS) they come over ctnetlink, which needs
// CAP_NET_ADMIN. The error is for a namespace that cannot be entered.
func readTable(nsPath string) (tableRead, error) {
	r := tableRead{count: -1, max: -1, buckets: -1}
	var statsData []byte
	var statsMissing bool
	err := inNetNS(nsPath, func(procNet string) error {
		var found bool
		r.count, found = readFirstInt(countFiles)
		r.max, _ = readFirstInt(maxFiles)
		r.buckets, _ = readFirstInt(bucketsFiles)
		r.active = found || r.max >= 0
		if !r.active {
			return nil
		}
		statsMissing = true
		for _, rel := range statFiles {
			b, err := os.ReadFile(procNet + "/" + rel)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			statsMissing = false
			if err != nil {
				r.statsErr = fmt.Errorf("read %s: %w", rel, err)
				break
			}
			statsData = b
			break
		}
		return nil
	})
	if err != nil || !r.active {
		return r, err
	}
	switch {
	case statsData != nil:
		per, err := host.ParseProcStats(bytes.NewReader(statsData))
		if err != nil {
			r.statsErr = fmt.Errorf("/proc/net/stat/nf_conntrack: %w", err)
			break
		}
		t := conntrack.SumStats(per)
		r.stats, r.statsSource, r.perCPU = &t, "proc", per
	case statsMissing:
		per, err := netlinkStats(nsPath)
		if err != nil {
			r.statsErr = err
			break
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

// readFirstInt reads the first of the files that exists as one integer;
// found says whether one existed.
func readFirstInt(files []string) (int64, bool) {
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

// inNetNS runs fn on a locked OS thread inside the network namespace at
// path ("" is the caller's own), passing the /proc/…/net directory that
// shows that namespace. /proc/sys/net and /proc/thread-self/net show the
// namespace of the thread that opens them, so every read happens in fn.
// The thread returns to its own namespace afterwards and is handed back to
// the runtime only when that succeeded; otherwise it stays locked and ends
// with its goroutine. A thread left inside would keep a deleted namespace
// alive.
func inNetNS(path string, fn func(procNet string) error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		procNet := "/proc/thread-self/net"
		if _, err := os.Stat(procNet); err != nil {
			procNet = fmt.Sprintf("/proc/self/task/%d/net", unix.Gettid())
		}
		if path == "" {
			defer runtime.UnlockOSThread()
			errc <- fn(procNet)
			return
		}
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer unix.Close(self)
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace %s: %w", path, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			runtime.UnlockOSThread()
			if errors.Is(err, unix.EPERM) {
				err = fmt.Errorf("%w (entering another network namespace needs CAP_SYS_ADMIN)", err)
			}
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		err = fn(procNet)
		if unix.Setns(self, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
