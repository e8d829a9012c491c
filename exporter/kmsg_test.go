package exporter

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

// records hands out one /dev/kmsg record per Read, like the device; an
// empty record stands for an EPIPE (records overwritten); at the end it
// says so on drained (the follower has counted every record by then: it
// reads the next only after counting the last) and blocks until closed.
type records struct {
	recs    []string
	closed  chan struct{}
	drained chan struct{}
}

func (r *records) Read(p []byte) (int, error) {
	if len(r.recs) == 0 {
		close(r.drained)
		<-r.closed
		return 0, os.ErrClosed
	}
	rec := r.recs[0]
	r.recs = r.recs[1:]
	if rec == "" {
		return 0, syscall.EPIPE
	}
	return copy(p, rec), nil
}

// The follower counts each namespace's events from the log's records: by
// the inode the message names, not before the namespace was created
// (inode numbers are reused), the unnamed ones for the initial namespace,
// and it goes on after an overwritten record.
func TestKernelLogCountsEventsPerNamespace(t *testing.T) {
	boot := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	at := func(sec int) string { return fmt.Sprint(sec * 1e6) } // µs since boot
	recs := []string{
		"4,100," + at(100) + ",-;nf_conntrack: nf_conntrack: table full in netns 4026532400, dropping packet\n",
		"6,101," + at(101) + ",-;eth0: link up\n",
		"4,102," + at(102) + ",-;nf_conntrack: nf_conntrack: table full in netns 4026532400, dropping packet\n",
		"", // EPIPE
		"4,150," + at(500) + ",-;nf_conntrack: nf_conntrack: table full in netns 4026532400, dropping packet\n",
		"4,151," + at(501) + ",-;nf_conntrack: nf_conntrack: table full in netns 4026532401, dropping packet\n",
		"4,152," + at(502) + ",-;nf_conntrack: nf_conntrack: table full, dropping packet\n",
		"4,153," + at(503) + ",-;nf_conntrack: nf_conntrack: table full, dropping packet\n",
	}
	src := &records{recs: recs, closed: make(chan struct{}), drained: make(chan struct{})}
	k := newKernelLog()
	k.active = true
	done := make(chan struct{})
	go func() { k.follow(src, boot); close(done) }()
	<-src.drained
	// A namespace created at 300 s has inode 4026532400 now: the events
	// at 100 and 102 s were an earlier namespace's with the same number.
	reused := &target{label: "web", inode: 4026532400, created: boot.Add(300 * time.Second)}
	other := &target{label: "db", inode: 4026532401}
	initNS := &target{label: "init", inode: 4026531840, init: true}
	unknownCreation := &target{label: "old", inode: 4026532400}
	for _, c := range []struct {
		t    *target
		want uint64
	}{{reused, 1}, {other, 1}, {initNS, 2}, {unknownCreation, 3}} {
		got, ok := k.events(c.t)
		if !ok || got != c.want {
			t.Errorf("%s: %d events (ok %v), want %d", c.t.label, got, ok, c.want)
		}
	}
	close(src.closed)
	<-done
	if active, err := k.status(); active || err != nil {
		t.Errorf("after close: active %v, err %v; want inactive without error", active, err)
	}
}

// The event memory is bounded whatever the log holds: runs per inode and
// inodes; the count of a namespace only grows.
func TestKernelLogMemoryIsBounded(t *testing.T) {
	k := newKernelLog()
	k.active = true
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	tg := &target{inode: 7}
	var last uint64
	for i := 0; i < 3*maxRunsPerInode; i++ {
		k.add(7, start.Add(time.Duration(i)*time.Minute), 2) // a minute apart: a run each
		if i%500 == 0 {
			n, _ := k.events(tg)
			if n < last {
				t.Fatalf("count went down: %d after %d", n, last)
			}
			last = n
		}
	}
	if got := len(k.runs[7]); got > maxRunsPerInode {
		t.Errorf("%d runs kept for one inode, bound %d", got, maxRunsPerInode)
	}
	if n, _ := k.events(tg); n != 2*3*maxRunsPerInode {
		t.Errorf("count %d, want %d", n, 2*3*maxRunsPerInode)
	}
	for i := uint64(0); i < maxInodes+100; i++ {
		k.add(1000+i, start.Add(time.Duration(i)*time.Second), 1)
	}
	if got := len(k.runs); got > maxInodes {
		t.Errorf("%d inodes kept, bound %d", got, maxInodes)
	}
	// Bursts within runGap merge.
	k2 := newKernelLog()
	for i := 0; i < 100; i++ {
		k2.add(9, start.Add(time.Duration(i)*time.Second), 1)
	}
	if got := len(k2.runs[9]); got != 1 {
		t.Errorf("100 events a second apart made %d runs, want 1", got)
	}
}
