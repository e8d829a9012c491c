package exporter

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/ctdoctor/ctdoctor/host"
)

// Bounds of the kernel-log event memory: runs of events per namespace
// inode, and inodes. Events closer than runGap merge into one run.
const (
	maxRunsPerInode = 1024
	maxInodes       = 4096
	runGap          = 10 * time.Second
)

// eventRun is a burst of "table full" events of one namespace inode.
type eventRun struct {
	first, last time.Time
	n           uint64
}

// kernelLog follows the kernel log (/dev/kmsg) from the start of its ring
// buffer and counts the "table full, dropping packet" events by the
// namespace inode the message names (0: the message names none). Reading
// it needs CAP_SYSLOG when kernel.dmesg_restrict=1. The count only grows:
// records overwritten in the ring buffer while the exporter runs are
// already counted.
type kernelLog struct {
	mu     sync.Mutex
	runs   map[uint64][]eventRun
	err    error // why the log is not (or no longer) followed
	active bool
	closer io.Closer
}

func newKernelLog() *kernelLog { return &kernelLog{runs: map[uint64][]eventRun{}} }

// start opens /dev/kmsg and follows it on a goroutine until stop.
func (k *kernelLog) start() error {
	f, err := host.OpenKernelLog(false)
	if err != nil {
		k.mu.Lock()
		k.err = err
		k.mu.Unlock()
		return err
	}
	k.mu.Lock()
	k.active, k.closer = true, f
	k.mu.Unlock()
	go k.follow(f, host.KernelLogBootTime())
	return nil
}

// stop ends following.
func (k *kernelLog) stop() {
	k.mu.Lock()
	c := k.closer
	k.closer = nil
	k.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// follow counts the table-full events of the records read from r (one
// per Read, as /dev/kmsg returns them) until the reader fails or is
// closed.
func (k *kernelLog) follow(r io.Reader, boot time.Time) {
	err := host.FollowKernelLog(r, boot, func(ev host.TableFullEvent) {
		if ev.Notice {
			return // the count is of lines logged, as in the diagnosis
		}
		k.mu.Lock()
		k.add(ev.NetNS, ev.Time, 1)
		k.mu.Unlock()
	})
	k.mu.Lock()
	k.active = false
	if !errors.Is(err, os.ErrClosed) {
		k.err = fmt.Errorf("kernel log: read: %w", err)
	}
	k.mu.Unlock()
}

// add counts n events of inode at t (zero if unknown: now).
func (k *kernelLog) add(inode uint64, t time.Time, n uint64) {
	if t.IsZero() {
		t = time.Now()
	}
	runs := k.runs[inode]
	if len(runs) > 0 && t.Sub(runs[len(runs)-1].last) < runGap && !t.Before(runs[len(runs)-1].last) {
		runs[len(runs)-1].last = t
		runs[len(runs)-1].n += n
		return
	}
	if _, ok := k.runs[inode]; !ok && len(k.runs) >= maxInodes {
		k.forgetOldestInode()
	}
	runs = append(runs, eventRun{first: t, last: t, n: n})
	if len(runs) > maxRunsPerInode {
		runs[1].first, runs[1].n = runs[0].first, runs[0].n+runs[1].n
		runs = append(runs[:0], runs[1:]...)
	}
	k.runs[inode] = runs
}

func (k *kernelLog) forgetOldestInode() {
	var oldest uint64
	var at time.Time
	first := true
	for ino, runs := range k.runs {
		last := runs[len(runs)-1].last
		if ino != 0 && (first || last.Before(at)) {
			oldest, at, first = ino, last, false
		}
	}
	if !first {
		delete(k.runs, oldest)
	}
}

// events returns the table-full events of the namespace t names: those
// that name its inode and are not older than the namespace (inode numbers
// are reused: the events of a deleted namespace with the same number
// came before this one was created), and for the initial namespace the
// events that name none (kernels name every other namespace in the
// message; older ones name none, and then every event is counted here).
// ok is false when the log is not followed.
func (k *kernelLog) events(t *target) (n uint64, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.active && k.err != nil {
		return 0, false
	}
	count := func(runs []eventRun) {
		for _, r := range runs {
			if t.created.IsZero() || !r.last.Before(t.created) {
				n += r.n
			}
		}
	}
	if t.inode != 0 {
		count(k.runs[t.inode])
	}
	if t.init {
		n += sumRuns(k.runs[0])
	}
	return n, true
}

func sumRuns(runs []eventRun) uint64 {
	var n uint64
	for _, r := range runs {
		n += r.n
	}
	return n
}

// status says whether the log is followed, and if not why.
func (k *kernelLog) status() (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.active, k.err
}
