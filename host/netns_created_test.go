package host

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"golang.org/x/sys/unix"
)

func TestProcessStart(t *testing.T) {
	dir := t.TempDir()
	boot := time.Date(2026, 11, 21, 5, 0, 0, 0, time.UTC)
	// comm may hold spaces and ')': the fields are counted after the last ')'.
	stat := "4242 (we (ird) x) S 1 4242 4242 0 -1 4194560 178 0 0 0 1 0 0 0 20 0 1 0 12345 2170880 216 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := processStart(dir, boot), boot.Add(123450*time.Millisecond); !got.Equal(want) {
		t.Errorf("start %v, want %v (12345 ticks of 10 ms)", got, want)
	}
	if !processStart(dir, time.Time{}).IsZero() || !processStart(t.TempDir(), boot).IsZero() {
		t.Error("no boot time or no stat file: want zero")
	}
	os.WriteFile(filepath.Join(dir, "stat"), []byte("4242 (x) S 1 2\n"), 0o644)
	if !processStart(dir, boot).IsZero() {
		t.Error("short stat line: want zero")
	}
}

// TestNetNSCreatedLive checks what the kernel gives to date a namespace,
// on which the split of a reused number's log events rests:
//
//   - a namespace made by `ip netns add`: its bind mount holds the nsfs
//     inode, whose times are the creation's, read as Created;
//   - an unnamed namespace (unshare -n): /proc/PID/ns/net gets a new time
//     at each stat while nothing holds it, so Created comes from the start
//     of its process instead.
func TestNetNSCreatedLive(t *testing.T) {
	nstest.Require(t, "unshare", "sleep")
	// The nsfs times come from the coarse clock: up to a tick behind.
	const tick = 20 * time.Millisecond
	before := time.Now()
	ns := nstest.New(t)
	after := time.Now()
	list, err := ListNetNS()
	if err != nil {
		t.Fatal(err)
	}
	var named *NetNS
	for i := range list {
		if list[i].Inode == ns.Inode() {
			named = &list[i]
		}
	}
	if named == nil || named.Name != ns.Name || named.Created.Before(before.Add(-tick)) || named.Created.After(after) {
		t.Fatalf("named namespace %+v: want created between %v and %v", named, before, after)
	}
	res, err := ResolveNetNS(ns.Name)
	if err != nil || !res.Created.Equal(named.Created) {
		t.Errorf("ResolveNetNS: %+v, %v; want created %v", res, err, named.Created)
	}

	before = time.Now()
	cmd := exec.Command("unshare", "-n", "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pidNS := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "ns/net")
	var ino uint64
	for range 100 { // until unshare has made the namespace
		if i, err := statInode(pidNS); err == nil && i != initNetNSInode() {
			ino = i
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ino == 0 {
		t.Fatal("unshare -n made no namespace")
	}
	started := time.Now()
	time.Sleep(1200 * time.Millisecond)
	var st1, st2 unix.Stat_t
	unix.Stat(pidNS, &st1)
	time.Sleep(50 * time.Millisecond)
	unix.Stat(pidNS, &st2)
	t.Logf("unheld nsfs inode: ctime %v then %v (stamped at each stat)", nsfsTime(&st1).Format(time.StampMicro), nsfsTime(&st2).Format(time.StampMicro))
	if nsfsTime(&st1).Before(started.Add(time.Second)) {
		t.Logf("note: the unheld inode kept its time (something holds it)")
	}
	created := netNSCreated(pidNS, ino)
	// Process start times are in 10 ms ticks, rounded down.
	if created.Before(before.Add(-tick)) || created.After(started) {
		t.Errorf("unnamed namespace created %v, want the process's start, between %v and %v", created, before, started)
	}
}
