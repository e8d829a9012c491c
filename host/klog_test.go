package host

import (
	"strings"
	"testing"
	"time"
)

// seed004 is var/log/messages from the CentOS 5 field report, verbatim.
const seed004 = `Nov  8 08:54:58 server kernel: ip_conntrack: table full, dropping packet.
Nov  8 08:55:03 server kernel: printk: 49 messages suppressed.
Nov  8 08:55:03 server kernel: ip_conntrack: table full, dropping packet.
Nov  8 08:55:08 server kernel: printk: 49 messages suppressed.
`

func TestParseKernelLog(t *testing.T) {
	boot := time.Date(2025, 11, 20, 10, 0, 0, 0, time.UTC)
	local := func(y int, m time.Month, d, hh, mm, ss int) time.Time {
		return time.Date(y, m, d, hh, mm, ss, 0, time.Local)
	}
	for _, tc := range []struct {
		name        string
		in          string
		year        int
		events      int
		suppressed  int
		first, last time.Time
		module      string
		netns       map[uint64]int
	}{
		{name: "CentOS 5 syslog", in: seed004, year: 2009, events: 2, suppressed: 98,
			first: local(2009, 11, 8, 8, 54, 58), last: local(2009, 11, 8, 8, 55, 3), module: "ip_conntrack"},
		{name: "kmsg 6.18 netns", year: 2025, events: 2, suppressed: 12, module: "nf_conntrack",
			in: "6,1234,5678901,-;eth0: link up\n" +
				"4,1235,61000000,-;nf_conntrack: nf_conntrack: table full in netns 4026532246, dropping packet\n" +
				" SUBSYSTEM=net\n" +
				"4,1236,66000000,-;net_ratelimit: 12 callbacks suppressed\n" +
				"4,1237,66000001,-;nf_conntrack: nf_conntrack: table full in netns 4026532246, dropping packet\n",
			first: boot.Add(61 * time.Second), last: boot.Add(66*time.Second + time.Microsecond),
			netns: map[uint64]int{4026532246: 2}},
		{name: "dmesg 5.x", year: 2025, events: 3, suppressed: 5, module: "nf_conntrack",
			in: "[  123.456789] nf_conntrack: nf_conntrack: table full, dropping packet\n" +
				"[  128.000001] nf_conntrack: 5 callbacks suppressed\n" +
				"[  128.000002] nf_conntrack: nf_conntrack: table full, dropping packet\n" +
				"[  129.5] nf_conntrack: table full, dropping packet\n",
			first: boot.Add(123456789 * time.Microsecond), last: boot.Add(129500 * time.Millisecond)},
		{name: "dmesg -T", year: 2025, events: 1, module: "nf_conntrack",
			in:    "[Thu Nov 20 10:01:02 2025] nf_conntrack: nf_conntrack: table full in netns 4026531833, dropping packet\n",
			first: local(2025, 11, 20, 10, 1, 2), last: local(2025, 11, 20, 10, 1, 2), netns: map[uint64]int{4026531833: 1}},
		{name: "rfc3339 syslog with kernel stamp", year: 2025, events: 1, module: "nf_conntrack",
			in:    "2025-11-20T10:01:02.5+00:00 web-03 kernel: [ 3601.000000] nf_conntrack: nf_conntrack: table full, dropping packet\n",
			first: time.Date(2025, 11, 20, 10, 1, 2, 5e8, time.UTC), last: time.Date(2025, 11, 20, 10, 1, 2, 5e8, time.UTC)},
		{name: "year rollover", year: 2024, events: 2, module: "nf_conntrack",
			in: "Dec 31 23:59:59 h kernel: nf_conntrack: table full, dropping packet\n" +
				"Jan  1 00:00:01 h kernel: nf_conntrack: table full, dropping packet\n",
			first: local(2024, 12, 31, 23, 59, 59), last: local(2025, 1, 1, 0, 0, 1)},
		{name: "suppression away from events is not counted", year: 2025, events: 1, suppressed: 0, module: "nf_conntrack",
			in: "[ 1.0] net_ratelimit: 40 callbacks suppressed\n" +
				"[ 2.0] IPv4: martian source\n" +
				"[ 3.0] nf_conntrack: nf_conntrack: table full, dropping packet\n" +
				"[ 4.0] eth0: link down\n" +
				"[ 5.0] printk: 7 messages suppressed.\n",
			first: boot.Add(3 * time.Second), last: boot.Add(3 * time.Second)},
		{name: "not from the kernel", year: 2025, events: 0,
			in: "Nov  8 08:54:58 server myapp: nf_conntrack: table full, dropping packet\n" +
				"Nov  8 08:54:58 server kernel: something: table full, dropping packet\n"},
		{name: "bare messages (ctdoctor/kmsg.txt)", year: 2025, events: 1, module: "nf_conntrack",
			in: "nf_conntrack: nf_conntrack: table full in netns 7, dropping packet\n", netns: map[uint64]int{7: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseKernelLog(strings.NewReader(tc.in), boot, tc.year)
			if err != nil {
				t.Fatal(err)
			}
			if s.TableFullEvents != tc.events || s.Suppressed != tc.suppressed {
				t.Errorf("events %d suppressed %d, want %d %d", s.TableFullEvents, s.Suppressed, tc.events, tc.suppressed)
			}
			if !s.First.Equal(tc.first) || !s.Last.Equal(tc.last) {
				t.Errorf("first %v last %v, want %v %v", s.First, s.Last, tc.first, tc.last)
			}
			if len(s.Lines) != tc.events {
				t.Errorf("%d lines kept, want %d", len(s.Lines), tc.events)
			}
			for _, l := range s.Lines {
				if l.Module != tc.module || !strings.Contains(l.Text, "table full") || strings.Contains(l.Text, "kernel:") {
					t.Errorf("line %+v: want module %s and the bare message", l, tc.module)
				}
			}
			got := map[uint64]int{}
			for _, c := range s.ByNetNS {
				got[c.Inode] = c.Count
			}
			if len(got) != len(tc.netns) {
				t.Errorf("by netns %v, want %v", got, tc.netns)
			}
			for k, v := range tc.netns {
				if got[k] != v {
					t.Errorf("by netns %v, want %v", got, tc.netns)
				}
			}
		})
	}
}

func TestParseKernelLogKeepsLastLines(t *testing.T) {
	var b strings.Builder
	for i := range 25 {
		b.WriteString("[ " + string(rune('0'+i%10)) + ".0] nf_conntrack: nf_conntrack: table full, dropping packet\n")
	}
	s, err := ParseKernelLog(strings.NewReader(b.String()), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.TableFullEvents != 25 || len(s.Lines) != keepLogLines {
		t.Fatalf("events %d lines %d", s.TableFullEvents, len(s.Lines))
	}
	if !s.First.IsZero() {
		t.Errorf("no boot time: first = %v, want zero", s.First)
	}
}

func FuzzParseKernelLog(f *testing.F) {
	f.Add([]byte(seed004))
	f.Add([]byte("4,1235,61000000,-;nf_conntrack: nf_conntrack: table full in netns 4026532246, dropping packet\n SUBSYSTEM=net\n"))
	f.Add([]byte("[  123.456789] nf_conntrack: nf_conntrack: table full, dropping packet\n[  128.0] net_ratelimit: 5 callbacks suppressed\n"))
	f.Add([]byte("[Thu Nov 20 10:01:02 2025] nf_conntrack: table full, dropping packet\n"))
	f.Add([]byte("2025-11-20T10:01:02.5+00:00 web-03 kernel: [ 3601.000000] nf_conntrack: table full in netns 99999999999999999999, dropping packet\n"))
	f.Add([]byte("<4>[ 1.0] printk: -3 messages suppressed.\nkern  :warn  : [ 2.0] ip_conntrack: table full\n"))
	f.Add([]byte("[ 60.0] nf_conntrack: nf_conntrack: table full in netns 4026532246, dropping packet\n" +
		"[ 62.0] nf_conntrack: nf_conntrack: table full in netns 4026532246, dropping packet\n" +
		"[ 63.0] nf_conntrack: nf_conntrack: table full, dropping packet\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseKernelLog(strings.NewReader(string(data)), time.Unix(1700000000, 0), 2025)
		if err != nil {
			return
		}
		if len(s.Lines) > keepLogLines || len(s.Lines) > s.TableFullEvents {
			t.Fatalf("%d lines for %d events", len(s.Lines), s.TableFullEvents)
		}
		if s.Suppressed < 0 {
			t.Fatalf("suppressed %d", s.Suppressed)
		}
		n := 0
		for _, c := range s.ByNetNS {
			n += c.Count
		}
		if n > s.TableFullEvents {
			t.Fatalf("netns counts %d > events %d", n, s.TableFullEvents)
		}
		// With namespaces that exist now (one created mid-log, reusing a
		// number): every event is counted once, and an inode's events are
		// split in at most a gone and a current entry.
		list := []NetNS{{Name: "demo", Inode: 4026532246, Created: time.Unix(1700000061, 0)},
			{Name: "web", Inode: 7}, {Name: "init", Inode: 4026531840, Init: true}}
		s2, err := ParseKernelLogNetNS(strings.NewReader(string(data)), time.Unix(1700000000, 0), 2025, list)
		if err != nil {
			t.Fatalf("error with a namespace list only: %v", err)
		}
		per := map[nsKey]int{}
		n = s2.NoNetNS
		for _, c := range s2.ByNetNS {
			n += c.Count
			per[nsKey{c.Inode, c.Gone}]++
			if c.Gone && (c.Name != "" || c.ReusedBy != "demo" || !c.Last.Before(list[0].Created)) {
				t.Fatalf("gone entry %+v", c)
			}
			if !c.Gone && c.Inode == 4026532246 && c.Name != "demo" {
				t.Fatalf("entry %+v not named demo", c)
			}
		}
		if n != s2.TableFullEvents || s2.TableFullEvents != s.TableFullEvents {
			t.Fatalf("%d events counted of %d (%d without a list)", n, s2.TableFullEvents, s.TableFullEvents)
		}
		for k, c := range per {
			if c != 1 {
				t.Fatalf("%d entries for %+v", c, k)
			}
		}
		e := s2.EventsOf(list[0])
		if e.Own+e.Unnamed+e.Before+e.Other != s2.TableFullEvents {
			t.Fatalf("EventsOf %+v does not add up to %d", e, s2.TableFullEvents)
		}
	})
}
