package host

import (
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"
)

// kmsgRecords hands out one record per Read like /dev/kmsg; "" stands for
// EPIPE (records overwritten), and the end is io.EOF.
type kmsgRecords []string

func (r *kmsgRecords) Read(p []byte) (int, error) {
	if len(*r) == 0 {
		return 0, io.EOF
	}
	rec := (*r)[0]
	*r = (*r)[1:]
	if rec == "" {
		return 0, syscall.EPIPE
	}
	return copy(p, rec), nil
}

// The follower delivers each table-full line as it comes, with its
// namespace and time; a rate limiter's notice before a line is that
// line's Suppressed, one right after a line is a Notice of the line's
// namespace, and one next to another message belongs to no event.
func TestFollowKernelLog(t *testing.T) {
	boot := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	at := func(sec int) string { return fmt.Sprint(sec * 1e6) } // µs since boot
	recs := kmsgRecords{
		"4,100," + at(100) + ",-;nf_conntrack: nf_conntrack: table full in netns 4026532400, dropping packet\n",
		"4,101," + at(101) + ",-;net_ratelimit: 7 callbacks suppressed\n", // after a line: a notice
		"6,102," + at(102) + ",-;eth0: link up\n SUBSYSTEM=net\n",
		"4,103," + at(103) + ",-;nf_conntrack: 12 callbacks suppressed\n", // before a line: its Suppressed
		"", // EPIPE
		"4,104," + at(104) + ",-;nf_conntrack: nf_conntrack: table full, dropping packet\n",
		"6,105," + at(105) + ",-;eth0: link down\n",
		"4,106," + at(106) + ",-;net_ratelimit: 3 callbacks suppressed\n", // between unrelated messages: nobody's
		"6,107," + at(107) + ",-;eth1: link up\n",
		"4,108," + at(108) + ",-;ip_conntrack: table full, dropping packet.\n",
	}
	var got []TableFullEvent
	err := FollowKernelLog(&recs, boot, func(ev TableFullEvent) { got = append(got, ev) })
	if err != io.EOF {
		t.Errorf("FollowKernelLog = %v, want the reader's io.EOF", err)
	}
	want := []TableFullEvent{
		{LogEvent: LogEvent{Time: boot.Add(100 * time.Second), Module: "nf_conntrack", NetNS: 4026532400,
			Text: "nf_conntrack: nf_conntrack: table full in netns 4026532400, dropping packet"}},
		{LogEvent: LogEvent{Time: boot.Add(101 * time.Second), Module: "nf_conntrack", NetNS: 4026532400,
			Text: "net_ratelimit: 7 callbacks suppressed"}, Suppressed: 7, Notice: true},
		{LogEvent: LogEvent{Time: boot.Add(104 * time.Second), Module: "nf_conntrack",
			Text: "nf_conntrack: nf_conntrack: table full, dropping packet"}, Suppressed: 12},
		{LogEvent: LogEvent{Time: boot.Add(108 * time.Second), Module: "ip_conntrack",
			Text: "ip_conntrack: table full, dropping packet."}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

// OpenKernelLog from the end reads nothing of what was logged before: a
// Read waits (and Close ends it).
func TestOpenKernelLogFromEnd(t *testing.T) {
	f, err := OpenKernelLog(true)
	if err != nil {
		t.Skipf("skipped: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		done <- FollowKernelLog(f, KernelLogBootTime(), func(TableFullEvent) {})
	}()
	time.Sleep(100 * time.Millisecond)
	f.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("FollowKernelLog ended without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the follower")
	}
	if KernelLogBootTime().IsZero() || KernelLogBootTime().After(time.Now()) {
		t.Errorf("boot time %v", KernelLogBootTime())
	}
}
