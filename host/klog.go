package host

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// keepLogLines is how many of the last "table full" events a LogSummary keeps.
const keepLogLines = 10

// ParseKernelLog counts the "table full, dropping packet" events in a
// kernel log. It accepts, line by line and mixed:
//
//   - /dev/kmsg records: "4,1234,5678901,-;nf_conntrack: …" (the third
//     field is microseconds since boot, made wall time with boot);
//   - `dmesg`: "[  123.456789] nf_conntrack: …" (seconds since boot);
//   - `dmesg -T`: "[Sat Nov  8 08:54:58 2025] nf_conntrack: …";
//   - syslog files: "Nov  8 08:54:58 server kernel: ip_conntrack: …"
//     (the year, which syslog omits, is year, moving on at a December to
//     January step; 0 means the current year), with or without a
//     "[123.456]" kernel stamp after "kernel:", and RFC 3339 stamps
//     ("2025-11-08T08:54:58.123+01:00 server kernel: …").
//
// The messages recognised are all kernel generations':
// "ip_conntrack: table full, dropping packet.",
// "nf_conntrack: table full, dropping packet",
// "nf_conntrack: nf_conntrack: table full, dropping packet" and
// "nf_conntrack: nf_conntrack: table full in netns N, dropping packet"
// (N is the namespace's inode). Rate-limit notices — "printk: N messages
// suppressed.", "net_ratelimit: N callbacks suppressed", "nf_conntrack: N
// callbacks suppressed" — add N to Suppressed when they sit next to a
// table-full line (net_ratelimit's budget is shared with other networking
// messages, so one elsewhere in the log says nothing about conntrack).
//
// With a zero boot time, monotonic stamps give no event time. Lines that
// fit no format are skipped; only a read error is returned. ByNetNS names
// are left empty: [ParseKernelLogNetNS] resolves them.
func ParseKernelLog(r io.Reader, boot time.Time, year int) (LogSummary, error) {
	return ParseKernelLogNetNS(r, boot, year, nil)
}

// ParseKernelLogNetNS is [ParseKernelLog] that names the namespaces of the
// "table full in netns N" events after list, the namespaces that exist now
// (the first entry of an inode wins: list named ones first).
//
// Namespace inode numbers are reused once a namespace is gone. An event
// from before the creation of the namespace that has its number now
// (NetNS.Created) was logged by an earlier namespace: it is counted in an
// entry of its own, with Gone set and ReusedBy naming the namespace that
// has the number now, also once that one logs events of its own. Events
// without a time, or of a namespace whose creation time is unknown, go to
// the namespace that has the number now.
func ParseKernelLogNetNS(r io.Reader, boot time.Time, year int, list []NetNS) (LogSummary, error) {
	p := logParser{boot: boot, year: year}
	if p.year == 0 {
		p.year = time.Now().Year()
	}
	if len(list) > 0 {
		p.now = make(map[uint64]NetNS, len(list))
		for _, ns := range list {
			if _, ok := p.now[ns.Inode]; !ok && ns.Inode != 0 {
				p.now[ns.Inode] = ns
			}
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		p.line(sc.Text())
	}
	p.flushPending(false)
	s := p.sum
	for _, c := range p.byNS {
		s.ByNetNS = append(s.ByNetNS, *c)
	}
	slices.SortFunc(s.ByNetNS, func(a, b NetNSCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Inode, b.Inode), cmp.Compare(a.First.UnixNano(), b.First.UnixNano()))
	})
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("read kernel log: %w", err)
	}
	return s, nil
}

type logParser struct {
	boot      time.Time
	year      int
	lastMonth time.Month
	sum       LogSummary
	now       map[uint64]NetNS // the namespaces that exist now, by inode
	byNS      map[nsKey]*NetNSCount
	lastEvent bool // the previous message was a table-full event
	pending   int  // a suppression count waiting for the next message
}

// nsKey tells apart a namespace's events from those of a gone namespace
// that had the same inode number.
type nsKey struct {
	ino  uint64
	gone bool
}

func (p *logParser) line(raw string) {
	if raw == "" || raw[0] == ' ' || raw[0] == '\t' {
		return // /dev/kmsg continuation lines (" SUBSYSTEM=…")
	}
	t, msg, ok := p.split(strings.TrimRight(raw, "\r\n"))
	if !ok {
		return
	}
	msg = strings.TrimSpace(msg)
	if n, ok := suppressed(msg); ok {
		if p.lastEvent {
			p.sum.Suppressed = satAdd(p.sum.Suppressed, n)
		} else {
			p.flushPending(false)
			p.pending = n
		}
		return
	}
	ev, ok := tableFull(msg)
	if !ok {
		p.flushPending(false)
		p.lastEvent = false
		return
	}
	p.flushPending(true)
	p.lastEvent = true
	ev.Time = t
	p.sum.TableFullEvents++
	span(&p.sum.First, &p.sum.Last, t)
	if ev.NetNS != 0 {
		p.countNetNS(ev.NetNS, t)
	} else {
		p.sum.NoNetNS++
		span(&p.sum.NoNetNSFirst, &p.sum.NoNetNSLast, t)
	}
	if len(p.sum.Lines) == keepLogLines {
		copy(p.sum.Lines, p.sum.Lines[1:])
		p.sum.Lines = p.sum.Lines[:keepLogLines-1]
	}
	p.sum.Lines = append(p.sum.Lines, ev)
}

// countNetNS counts an event of the namespace with inode ino at t.
func (p *logParser) countNetNS(ino uint64, t time.Time) {
	key := nsKey{ino: ino}
	ns, known := p.now[ino]
	if known && !ns.Created.IsZero() && !t.IsZero() && t.Before(ns.Created) {
		key.gone = true
	}
	if p.byNS == nil {
		p.byNS = map[nsKey]*NetNSCount{}
	}
	c := p.byNS[key]
	if c == nil {
		c = &NetNSCount{Inode: ino}
		switch {
		case key.gone:
			c.Gone, c.ReusedBy = true, ns.Name
		case known:
			c.Name = ns.Name
		}
		p.byNS[key] = c
	}
	c.Count++
	span(&c.First, &c.Last, t)
}

// span widens [first, last] to take in t (a zero t is unknown).
func span(first, last *time.Time, t time.Time) {
	if t.IsZero() {
		return
	}
	if first.IsZero() || t.Before(*first) {
		*first = t
	}
	if t.After(*last) {
		*last = t
	}
}

func (p *logParser) flushPending(count bool) {
	if count {
		p.sum.Suppressed = satAdd(p.sum.Suppressed, p.pending)
	}
	p.pending = 0
}

// split finds the time stamp and the message text of one line.
func (p *logParser) split(s string) (time.Time, string, bool) {
	// /dev/kmsg: "PRI,SEQ,USEC,FLAGS[,…];MESSAGE"
	if semi := strings.IndexByte(s, ';'); semi > 0 && s[0] >= '0' && s[0] <= '9' {
		hdr := strings.Split(s[:semi], ",")
		if len(hdr) >= 3 && isDigits(hdr[0]) && isDigits(hdr[1]) && isDigits(hdr[2]) {
			us, err := strconv.ParseUint(hdr[2], 10, 63)
			if err != nil {
				return time.Time{}, "", false
			}
			return p.sinceBoot(time.Duration(us) * time.Microsecond), s[semi+1:], true
		}
	}
	// dmesg -r: "<4>[  123.456] …"
	if len(s) > 3 && s[0] == '<' {
		if gt := strings.IndexByte(s, '>'); gt > 1 && gt < 6 && isDigits(s[1:gt]) {
			s = s[gt+1:]
		}
	}
	// dmesg -x: "kern  :warn  : [  123.456] …"
	if strings.HasPrefix(s, "kern") {
		if i := strings.Index(s, ": ["); i > 0 && i < 20 {
			s = s[i+2:]
		}
	}
	if len(s) > 0 && s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return time.Time{}, "", false
		}
		stamp, msg := strings.TrimSpace(s[1:end]), s[end+1:]
		if d, ok := parseSeconds(stamp); ok {
			return p.sinceBoot(d), msg, true
		}
		// dmesg -T: "Sat Nov  8 08:54:58 2025"
		if t, err := time.ParseInLocation("Mon Jan _2 15:04:05 2006", stamp, time.Local); err == nil {
			return t, msg, true
		}
		return time.Time{}, "", false
	}
	// syslog: "Nov  8 08:54:58 host kernel: …" or RFC 3339 stamps.
	var t time.Time
	rest := ""
	if len(s) >= 15 && s[3] == ' ' {
		ts, err := time.ParseInLocation("Jan _2 15:04:05", s[:15], time.Local)
		if err != nil {
			return time.Time{}, "", false
		}
		if p.lastMonth == time.December && ts.Month() == time.January {
			p.year++
		}
		p.lastMonth = ts.Month()
		t = time.Date(p.year, ts.Month(), ts.Day(), ts.Hour(), ts.Minute(), ts.Second(), 0, time.Local)
		rest = s[15:]
	} else if sp := strings.IndexByte(s, ' '); sp >= 19 && s[4] == '-' && s[10] == 'T' {
		ts, err := time.Parse(time.RFC3339Nano, s[:sp])
		if err != nil {
			return time.Time{}, "", false
		}
		t, rest = ts, s[sp:]
	} else if isKernelMessage(s) {
		return time.Time{}, s, true // a bare message, as ctdoctor/kmsg.txt stores them
	} else {
		return time.Time{}, "", false
	}
	// " host kernel: msg" — the program tag must be the kernel's.
	rest = strings.TrimLeft(rest, " ")
	sp := strings.IndexByte(rest, ' ')
	if sp < 0 {
		return time.Time{}, "", false
	}
	rest = rest[sp+1:]
	if !strings.HasPrefix(rest, "kernel:") {
		return time.Time{}, "", false
	}
	rest = strings.TrimLeft(rest[len("kernel:"):], " ")
	if len(rest) > 0 && rest[0] == '[' {
		if end := strings.IndexByte(rest, ']'); end > 0 {
			if _, ok := parseSeconds(strings.TrimSpace(rest[1:end])); ok {
				rest = rest[end+1:]
			}
		}
	}
	return t, rest, true
}

func (p *logParser) sinceBoot(d time.Duration) time.Time {
	if p.boot.IsZero() {
		return time.Time{}
	}
	return p.boot.Add(d)
}

// parseSeconds parses dmesg's "123.456789" seconds since boot.
func parseSeconds(s string) (time.Duration, bool) {
	whole, frac, _ := strings.Cut(s, ".")
	if !isDigits(whole) || (frac != "" && !isDigits(frac)) || len(whole) > 12 {
		return 0, false
	}
	sec, _ := strconv.ParseInt(whole, 10, 64)
	d := time.Duration(sec) * time.Second
	if len(frac) > 9 {
		frac = frac[:9]
	}
	if frac != "" {
		ns, _ := strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
		d += time.Duration(ns)
	}
	return d, true
}

// tableFull recognises the kernel's "table full, dropping packet" messages.
func tableFull(msg string) (LogEvent, bool) {
	i := strings.Index(msg, "table full")
	if i < 0 || !strings.Contains(msg[i:], "dropping packet") {
		return LogEvent{}, false
	}
	ev := LogEvent{Module: "nf_conntrack", Text: msg}
	head := msg[:i]
	switch {
	case strings.Contains(head, "ip_conntrack"):
		ev.Module = "ip_conntrack"
	case strings.Contains(head, "nf_conntrack"):
	default:
		return LogEvent{}, false
	}
	if j := strings.Index(msg[i:], " in netns "); j >= 0 {
		num := msg[i+j+len(" in netns "):]
		k := 0
		for k < len(num) && num[k] >= '0' && num[k] <= '9' {
			k++
		}
		if n, err := strconv.ParseUint(num[:k], 10, 64); err == nil {
			ev.NetNS = n
		}
	}
	return ev, true
}

// suppressed recognises the rate limiter's notices and returns N.
func suppressed(msg string) (int, bool) {
	var rest string
	switch {
	case strings.HasPrefix(msg, "printk: "):
		rest = strings.TrimPrefix(msg, "printk: ")
		if !strings.Contains(rest, " messages suppressed") {
			return 0, false
		}
	case strings.HasPrefix(msg, "net_ratelimit: "), strings.HasPrefix(msg, "nf_conntrack: "):
		_, rest, _ = strings.Cut(msg, ": ")
		if !strings.Contains(rest, " callbacks suppressed") {
			return 0, false
		}
	default:
		return 0, false
	}
	num, _, _ := strings.Cut(rest, " ")
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// isKernelMessage reports whether an unstamped line is one of the messages
// ParseKernelLog looks for.
func isKernelMessage(s string) bool {
	for _, p := range []string{"nf_conntrack: ", "ip_conntrack: ", "printk: ", "net_ratelimit: "} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// satAdd adds without overflowing (a hostile log cannot wrap the count).
func satAdd(a, b int) int {
	if a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}
