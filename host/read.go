package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"golang.org/x/sys/unix"
)

// Options choose what Read, ReadStats and Entries read.
type Options struct {
	// Root is "/" (or "") for the live host, else a directory holding the
	// same paths (a fixture, an extracted snapshot).
	Root string
	// NetNS is the namespace to read on the live host, a spec for
	// [ResolveNetNS]; "" is the caller's own. Ignored for a fake root.
	NetNS string
	// Interval, when positive, makes Read take a second statistics sample
	// that long after the first (Snapshot.Stats2), for rates.
	Interval time.Duration
	// Log makes Read summarise the kernel log's "table full" events.
	Log bool
	// AllNetNS makes Read measure every namespace's count (Snapshot.AllNetNS).
	AllNetNS bool
}

// ErrNotHostRoot is returned for a root directory that holds no host's
// files: every Linux host, and every ctdoctor snapshot, has
// proc/sys/kernel/osrelease.
var ErrNotHostRoot = errors.New("not a host root: expected a copy of a host's /proc (and /sys), such as an extracted ctdoctor snapshot or a test fixture, with at least proc/sys/kernel/osrelease")

// checkHostRoot refuses a root without proc/sys/kernel/osrelease, saying
// what is missing: a directory that is no host root would otherwise read
// as a host with nothing in it ("kernel -, 0 CPUs", healthy).
func checkHostRoot(root string) error {
	const rel = "proc/sys/kernel/osrelease"
	st, err := os.Stat(filepath.Join(root, rel))
	switch {
	case err == nil && st.Mode().IsRegular():
		return nil
	case err == nil:
		return fmt.Errorf("root %s: %s is not a file: %w", root, rel, ErrNotHostRoot)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("root %s: %w", root, err)
	}
	if _, err := os.Stat(filepath.Join(root, "proc")); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("root %s: no proc directory: %w", root, ErrNotHostRoot)
	}
	return fmt.Errorf("root %s: no %s: %w", root, rel, ErrNotHostRoot)
}

// live reports whether the options name the live host.
func (o Options) live() bool { return o.Root == "" || o.Root == "/" }

// reader reads one host through its root; for the live host, the
// per-namespace files are read on a thread inside the target namespace.
type reader struct {
	root   string
	live   bool
	nsPath string // setns target; "" = the caller's namespace
	warn   func(format string, args ...any)
}

func newReader(opt Options, snap *Snapshot) (*reader, error) {
	r := &reader{root: opt.Root, live: opt.live()}
	if r.root == "" {
		r.root = "/"
	}
	if snap != nil {
		r.warn = func(format string, args ...any) {
			snap.Warnings = append(snap.Warnings, fmt.Sprintf(format, args...))
		}
	} else {
		r.warn = func(string, ...any) {}
	}
	if !r.live {
		if st, err := os.Stat(r.root); err != nil {
			return nil, fmt.Errorf("root %s: %w", r.root, err)
		} else if !st.IsDir() {
			return nil, fmt.Errorf("root %s: not a directory", r.root)
		}
		if err := checkHostRoot(r.root); err != nil {
			return nil, err
		}
		return r, nil
	}
	ns, err := ResolveNetNS(opt.NetNS)
	if err != nil {
		return nil, err
	}
	if snap != nil {
		snap.NetNS = ns
	}
	if opt.NetNS != "" {
		r.nsPath = ns.Path
	}
	return r, nil
}

// path maps a root-relative path to the file to open. On the live host
// proc/net/… becomes proc/thread-self/net/…: /proc/net follows the
// thread-group leader's namespace, not the reading thread's.
func (r *reader) path(rel string) string {
	if r.live && strings.HasPrefix(rel, "proc/net/") {
		if _, err := os.Stat("/proc/thread-self"); err == nil {
			return "/proc/thread-self/net/" + rel[len("proc/net/"):]
		}
		return fmt.Sprintf("/proc/self/task/%d/net/%s", unix.Gettid(), rel[len("proc/net/"):])
	}
	return filepath.Join(r.root, rel)
}

func (r *reader) readFile(rel string) ([]byte, error) {
	return os.ReadFile(r.path(rel))
}

func (r *reader) exists(rel string) bool {
	_, err := os.Stat(r.path(rel))
	return err == nil
}

// inNS runs fn inside the target namespace (directly for a fake root).
func (r *reader) inNS(fn func() error) error {
	if !r.live {
		return fn()
	}
	return InNetNS(r.nsPath, fn)
}

// Read reads everything about the host but the table's entries: sizing
// sysctls, timeouts and switches (modern or legacy ip_conntrack paths),
// hashsize, kernel, CPUs, memory, slab object size, TCP sysctls, per-CPU
// statistics (twice with Interval), and with the options the kernel log,
// every namespace's count and kube-proxy's traces. What cannot be read
// becomes a Warning. The error is [ErrNoConntrack] (wrapped, with the
// partial Snapshot) when the host has no connection tracking at all,
// [ErrNotHostRoot] (wrapped) for a root that is no host's, and otherwise
// only for an unusable root or namespace.
func Read(ctx context.Context, opt Options) (*Snapshot, error) {
	snap := &Snapshot{
		TakenAt:  time.Now(),
		Settings: Settings{Count: -1, Max: -1, Buckets: -1, HashSize: -1, Timeouts: map[string]int64{}, Switches: map[string]int64{}},
		TCP: TCPSysctls{KeepaliveTime: -1, KeepaliveIntvl: -1, KeepaliveProbes: -1, FinTimeout: -1, TWReuse: -1,
			Retries2: -1, PortRangeLow: -1, PortRangeHigh: -1},
	}
	r, err := newReader(opt, snap)
	if err != nil {
		return nil, err
	}
	if r.live {
		snap.Source = "proc"
	} else {
		snap.Source = "file"
		snap.NetNS = NetNS{Name: "init", Init: true}
	}
	r.readSystem(snap)
	var present bool
	err = r.inNS(func() error {
		present = r.readSettings(&snap.Settings)
		r.readTCP(&snap.TCP)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if r.live && snap.Settings.Count < 0 && present {
		if c, m, err := netlinkCount(r.nsPath); err == nil {
			snap.Settings.Count = c
			if snap.Settings.Max < 0 {
				snap.Settings.Max = m
			}
		}
	}
	if !present {
		return snap, fmt.Errorf("%s: %w", r.describe(), ErrNoConntrack)
	}
	st, err := r.readStats(&snap.Settings)
	if err != nil {
		r.warn("statistics: %v", err)
	} else {
		snap.Stats = st
	}
	if opt.Log {
		snap.Log = r.readLog(snap)
	}
	if opt.AllNetNS {
		if r.live {
			snap.AllNetNS = allNetNSUsage(snap.Settings.Max, r.warn)
		} else {
			r.warn("--all-netns: only the live host's namespaces can be listed")
		}
	}
	snap.Kube = r.kubeProxy(snap)
	if opt.Interval > 0 && snap.Stats != nil {
		t := time.NewTimer(opt.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return snap, ctx.Err()
		case <-t.C:
		}
		if st2, err := r.readStats(nil); err != nil {
			r.warn("second statistics sample: %v", err)
		} else {
			snap.Stats2 = st2
		}
	}
	return snap, nil
}

func (r *reader) describe() string {
	if r.live {
		return "live host"
	}
	return "root " + r.root
}

// ReadStats takes one sample of the per-CPU statistics of the namespace
// (or fake root) the options name: /proc/net/stat/nf_conntrack, else
// ctnetlink on the live host or ctdoctor/conntrack-S.txt in a fake root.
func ReadStats(opt Options) (*StatsRead, error) {
	r, err := newReader(opt, nil)
	if err != nil {
		return nil, err
	}
	return r.readStats(nil)
}

// readStats reads one sample; set, when not nil, records whether the
// procfs file exists.
func (r *reader) readStats(set *Settings) (*StatsRead, error) {
	var (
		per    []conntrack.Stats
		src    string
		procOK bool
		errs   []error
	)
	err := r.inNS(func() error {
		for _, rel := range []string{"proc/net/stat/nf_conntrack", "proc/net/stat/ip_conntrack"} {
			b, err := r.readFile(rel)
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, fmt.Errorf("%s: %w", rel, err))
				}
				continue
			}
			procOK = true
			p, err := ParseProcStats(strings.NewReader(string(b)))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", rel, err))
				continue
			}
			per, src = p, "proc"
			return nil
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if set != nil {
		set.ProcStats = procOK
	}
	if per == nil {
		if r.live {
			p, err := netlinkStats(r.nsPath)
			if err == nil {
				per, src = p, "netlink"
			} else {
				errs = append(errs, fmt.Errorf("netlink: %w", err))
			}
		} else {
			const rel = "ctdoctor/conntrack-S.txt"
			b, err := r.readFile(rel)
			switch {
			case err == nil:
				if p, err := ParseConntrackS(strings.NewReader(string(b))); err == nil {
					per, src = p, "netlink" // `conntrack -S` reads ctnetlink
				} else {
					errs = append(errs, fmt.Errorf("%s: %w", rel, err))
				}
			case !errors.Is(err, fs.ErrNotExist):
				errs = append(errs, fmt.Errorf("%s: %w", rel, err))
			}
		}
	}
	if per == nil {
		if len(errs) == 0 {
			return nil, errors.New("not available: no /proc/net/stat/nf_conntrack (kernel built without CONFIG_NF_CONNTRACK_PROCFS) and no `conntrack -S` output")
		}
		return nil, fmt.Errorf("not available: %w", errors.Join(errs...))
	}
	return &StatsRead{At: time.Now(), Source: src, PerCPU: per, Total: conntrack.SumStats(per)}, nil
}
