package host

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// kmsgLimit bounds how much of the kernel ring buffer is read (the largest
// log_buf_len is 32 MiB; records carry headers besides).
const kmsgLimit = 64 << 20

// readLog summarises the kernel log: /dev/kmsg (else `dmesg`) on the live
// host; ctdoctor/kmsg.txt, else var/log/kern.log, messages or syslog under
// a fake root.
func (r *reader) readLog(snap *Snapshot) LogSummary {
	var (
		sum LogSummary
		err error
	)
	if r.live {
		// The namespaces that exist now name the log's "in netns N"
		// events, and their creation times tell a reused number's events
		// apart (see ParseKernelLogNetNS).
		list, _ := listNetNS("/")
		sum, err = readLiveLog(list)
	} else {
		sum, err = r.readLogFile()
	}
	if err != nil {
		r.warn("kernel log: %v", err)
	}
	return sum
}

func (r *reader) readLogFile() (LogSummary, error) {
	boot := r.bootTime()
	for _, rel := range []string{"ctdoctor/kmsg.txt", "var/log/kern.log", "var/log/messages", "var/log/syslog"} {
		f, err := os.Open(r.path(rel))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return LogSummary{}, fmt.Errorf("%s: %w", rel, err)
		}
		year := 0
		if st, err := f.Stat(); err == nil {
			year = st.ModTime().Year()
		}
		sum, err := ParseKernelLog(f, boot, year)
		f.Close()
		sum.Source = rel
		if err != nil {
			return sum, fmt.Errorf("%s: %w", rel, err)
		}
		return sum, nil
	}
	return LogSummary{}, errors.New("no ctdoctor/kmsg.txt, var/log/kern.log, var/log/messages or var/log/syslog under the root")
}

// bootTime is the root's proc/stat btime (zero if unknown).
func (r *reader) bootTime() time.Time {
	b, err := r.readFile("proc/stat")
	if err != nil {
		return time.Time{}
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(s, 0)
			}
		}
	}
	return time.Time{}
}

// liveBootTime is the wall time of the monotonic clock's zero, the base of
// /dev/kmsg and dmesg stamps.
func liveBootTime() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Time{}
	}
	// Rounded to the millisecond: the two clock reads are a few hundred
	// nanoseconds apart, and two reads of the log must give the same times.
	return time.Now().Round(0).Add(-time.Duration(ts.Nano())).Round(time.Millisecond)
}

// readLiveLog reads /dev/kmsg from the start of the ring buffer until
// EAGAIN (never blocking), falling back to running `dmesg`.
func readLiveLog(list []NetNS) (LogSummary, error) {
	boot := liveBootTime()
	data, kerr := readKmsg()
	if kerr == nil {
		sum, err := ParseKernelLogNetNS(bytes.NewReader(data), boot, 0, list)
		sum.Source = "/dev/kmsg"
		return sum, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "dmesg")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil {
		sum, err := ParseKernelLogNetNS(bytes.NewReader(out), boot, 0, list)
		sum.Source = "dmesg"
		return sum, err
	}
	msg := strings.TrimSpace(stderr.String())
	if errors.Is(kerr, fs.ErrPermission) || strings.Contains(msg, "not permitted") {
		return LogSummary{}, fmt.Errorf("%w; dmesg: %v %s (reading the kernel log needs CAP_SYSLOG when kernel.dmesg_restrict=1: run as root)", kerr, err, msg)
	}
	return LogSummary{}, fmt.Errorf("%w; dmesg: %v %s", kerr, err, msg)
}

// readKmsg returns the ring buffer's records, one per line.
func readKmsg() ([]byte, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/dev/kmsg", Err: err}
	}
	defer unix.Close(fd)
	var out []byte
	buf := make([]byte, 16*1024) // a record never exceeds 8 KiB; a smaller read fails with EINVAL
	for len(out) < kmsgLimit {
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EAGAIN:
			return out, nil
		case err == unix.EPIPE:
			continue // records were overwritten while reading: go on with the next
		case err == unix.EINTR:
			continue
		case err != nil:
			return out, &os.PathError{Op: "read", Path: "/dev/kmsg", Err: err}
		case n == 0:
			return out, nil
		}
		out = append(out, buf[:n]...)
		if out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
	}
	return out, nil
}
