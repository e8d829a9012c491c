package host

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"
)

// TableFullEvent is one "table full, dropping packet" line of the kernel
// log as [FollowKernelLog] delivers it, or a rate limiter's notice right
// after one.
type TableFullEvent struct {
	// LogEvent is the line: its time (zero when boot is unknown), module,
	// namespace inode (0 when the line names none) and text.
	LogEvent
	// Suppressed is how many more such lines the kernel's rate limiter
	// left out: the N of an "N callbacks suppressed" notice just before
	// this line.
	Suppressed int
	// Notice marks a rate limiter's notice that came right after a
	// table-full line: Suppressed lines of that line's namespace and
	// module were left out, Text is the notice.
	Notice bool
}

// FollowKernelLog reads kernel log records from r, one per Read as
// /dev/kmsg hands them out, and calls fn for each table-full event (and
// each rate-limit notice next to one, see [TableFullEvent]) until a read
// fails; it returns that error. Records overwritten in the ring buffer
// before they were read (EPIPE) and interrupted reads (EINTR) are
// skipped. boot is the wall time of the monotonic clock's zero, the base
// of the records' stamps ([KernelLogBootTime] on the live host).
//
// The messages are those [ParseKernelLog] recognises.
func FollowKernelLog(r io.Reader, boot time.Time, fn func(TableFullEvent)) error {
	f := follower{p: logParser{boot: boot, year: time.Now().Year()}, fn: fn}
	buf := make([]byte, 16<<10) // a record never exceeds 8 KiB; a smaller read fails with EINVAL
	for {
		n, err := r.Read(buf)
		if n > 0 {
			f.record(buf[:n])
		}
		switch {
		case err == nil:
		case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.EINTR):
			// Records were overwritten before they were read: go on with the next.
		default:
			return err
		}
	}
}

// follower turns records into events as they come, keeping what links
// a rate limiter's notice to the table-full line next to it.
type follower struct {
	p         logParser
	fn        func(TableFullEvent)
	last      LogEvent // the last table-full line
	lastEvent bool     // the previous message was a table-full line
	pending   int      // a notice's count waiting for the next message
}

var (
	tableFullWord  = []byte("table full")
	suppressedWord = []byte(" suppressed")
)

func (f *follower) record(rec []byte) {
	if !bytes.Contains(rec, tableFullWord) && !bytes.Contains(rec, suppressedWord) {
		// Another message: it separates a notice from the next line.
		f.lastEvent, f.pending = false, 0
		return
	}
	for line := range strings.SplitSeq(string(rec), "\n") {
		f.line(line)
	}
}

func (f *follower) line(raw string) {
	if raw == "" || raw[0] == ' ' || raw[0] == '\t' {
		return // /dev/kmsg continuation lines (" SUBSYSTEM=…")
	}
	t, msg, ok := f.p.split(strings.TrimRight(raw, "\r\n"))
	if !ok {
		return
	}
	msg = strings.TrimSpace(msg)
	if n, ok := suppressed(msg); ok {
		if f.lastEvent {
			f.fn(TableFullEvent{LogEvent: LogEvent{Time: t, Module: f.last.Module, NetNS: f.last.NetNS, Text: msg}, Suppressed: n, Notice: true})
		} else {
			f.pending = n
		}
		return
	}
	ev, ok := tableFull(msg)
	if !ok {
		f.lastEvent, f.pending = false, 0
		return
	}
	ev.Time = t
	f.fn(TableFullEvent{LogEvent: ev, Suppressed: f.pending})
	f.last, f.lastEvent, f.pending = ev, true, 0
}

// OpenKernelLog opens /dev/kmsg for [FollowKernelLog]: from the start of
// the ring buffer, or with fromEnd set only the records logged from now
// on. Closing the file ends a Read that waits. Reading it needs
// CAP_SYSLOG when kernel.dmesg_restrict=1, and the error says so.
func OpenKernelLog(fromEnd bool) (*os.File, error) {
	f, err := os.Open("/dev/kmsg")
	if err != nil {
		err = fmt.Errorf("kernel log: %w", err)
		if errors.Is(err, os.ErrPermission) {
			err = fmt.Errorf("%w (reading the kernel log needs CAP_SYSLOG when kernel.dmesg_restrict=1)", err)
		}
		return nil, err
	}
	if fromEnd {
		if _, err := f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("kernel log: seek to the end: %w", err)
		}
	}
	return f, nil
}

// KernelLogBootTime is the wall time of the monotonic clock's zero, the
// base of /dev/kmsg's stamps.
func KernelLogBootTime() time.Time { return liveBootTime() }
