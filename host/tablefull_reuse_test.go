package host_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"golang.org/x/sys/unix"
)

// TestLiveTableFullReusedInode reproduces, on the real kernel, a namespace
// inode number reused after its namespace logged "table full" events:
// namespace A fills its table and logs; A is deleted; namespaces are
// created until one, B, gets A's number. Then:
//
//   - before B logs anything, A's events are listed as gone, reused by B,
//     and B's table-full rule sees none of them;
//   - after B fills its own table, B's entry counts B's events only (its
//     first one after B's creation), A's stay apart;
//   - after `conntrack -F` in B, the verdict counts B's events only.
//
// Opt-in like TestLiveTableFull (CTDOCTOR_TABLEFULL_TEST=1): it fills two
// tables to the global nf_conntrack_max and writes "table full" lines to
// the kernel log.
func TestLiveTableFullReusedInode(t *testing.T) {
	if os.Getenv("CTDOCTOR_TABLEFULL_TEST") != "1" {
		t.Skip("skipped: set CTDOCTOR_TABLEFULL_TEST=1 (fills two test netns to nf_conntrack_max and writes \"table full\" lines to the kernel log)")
	}
	nstest.Require(t, "conntrack", "nft", "ping")
	max := nstest.GlobalMax(t)
	flows := nstest.AssuredFlows(t, max)
	ctx := context.Background()

	a := newNS(t)
	inode := a.inode(t)
	fillAndDrop(t, a, flows)
	snapA, err := host.Read(ctx, host.Options{Root: "/", NetNS: a.name, Log: true})
	if err != nil {
		t.Fatal(err)
	}
	// A's own events, and those of earlier namespaces that had its number.
	goneA, ownA := entries(snapA.Log, inode)
	if ownA == nil {
		t.Fatalf("no events of A (%d): %+v", inode, snapA.Log.ByNetNS)
	}
	countA := ownA.Count
	if goneA != nil {
		countA += goneA.Count
	}
	a.del(t)

	// The kernel hands out the lowest free number once A is freed (which
	// takes a moment: its entries are destroyed first). Namespaces that get
	// another number are kept until the end, so that the next one moves up.
	var bns *testNS
	deadline := time.Now().Add(30 * time.Second)
	for tries := 0; bns == nil && tries < 60 && time.Now().Before(deadline); tries++ {
		c := newNS(t)
		if c.inode(t) == inode {
			bns = c
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if bns == nil {
		t.Skipf("skipped: no new namespace got inode %d back within 60 tries (other namespaces are being created on this host)", inode)
	}
	t.Logf("A's inode %d reused by %s; A logged %d events, earlier holders of the number %d", inode, bns.name, ownA.Count, countA-ownA.Count)

	// Before B logs anything.
	snap, err := host.Read(ctx, host.Options{Root: "/", NetNS: bns.name, Log: true})
	if err != nil {
		t.Fatal(err)
	}
	if snap.NetNS.Created.IsZero() || snap.NetNS.Created.Before(snapA.Log.Last) || snap.NetNS.Created.After(time.Now()) {
		t.Errorf("B created at %v: want after A's last event %v and before now", snap.NetNS.Created, snapA.Log.Last)
	}
	gone, own := entries(snap.Log, inode)
	if gone == nil || gone.Count != countA || gone.ReusedBy != bns.name || gone.Name != "" || own != nil {
		t.Errorf("before B logged: gone %+v own %+v; want A's and its predecessors' %d events gone, reused by %s", gone, own, countA, bns.name)
	}
	if e := snap.Log.EventsOf(snap.NetNS); e.Own != 0 || e.Before < countA {
		t.Errorf("B's events before it logged: %+v", e)
	}
	if f := tableFull(analyze.Analyze(snap, nil, time.Now())); f != nil {
		t.Errorf("B blamed for A's events: %s", f.Summary)
	}

	// B fills its own table.
	fillAndDrop(t, bns, flows)
	snap, err = host.Read(ctx, host.Options{Root: "/", NetNS: bns.name, Log: true})
	if err != nil {
		t.Fatal(err)
	}
	gone2, own := entries(snap.Log, inode)
	if gone2 == nil || gone2.Count != gone.Count || own == nil || own.Name != bns.name || own.First.Before(snap.NetNS.Created) {
		t.Fatalf("after B's drops: gone %+v own %+v (B created %v)", gone2, own, snap.NetNS.Created)
	}
	e := snap.Log.EventsOf(snap.NetNS)
	if e.Own != own.Count || e.Before != gone.Count {
		t.Errorf("EventsOf B: %+v, want own %d, before %d", e, own.Count, gone.Count)
	}
	f := tableFull(analyze.Analyze(snap, nil, time.Now()))
	if f == nil || f.Evidence["log_events"] != own.Count || f.Evidence["log_events_before_netns_created"] != gone.Count {
		t.Errorf("table-full after B's drops: %+v", f)
	}

	// After conntrack -F: the verdict speaks of B's events only.
	bns.run(t, "conntrack", "-F")
	snap, err = host.Read(ctx, host.Options{Root: "/", NetNS: bns.name, Log: true})
	if err != nil {
		t.Fatal(err)
	}
	_, own = entries(snap.Log, inode)
	r := analyze.Analyze(snap, nil, time.Now())
	want := fmt.Sprintf("table full within the last hour: %d kernel log events, last at %s", own.Count, own.Last.UTC().Format(time.RFC3339))
	if f := tableFull(r); f == nil || f.Summary != want {
		t.Errorf("after conntrack -F: %+v, want %q", f, want)
	}
	t.Logf("verdict after conntrack -F: %s: %s", r.Verdict.Level, r.Verdict.Reason)
}

func entries(l host.LogSummary, inode uint64) (gone, own *host.NetNSCount) {
	for i := range l.ByNetNS {
		n := &l.ByNetNS[i]
		if n.Inode != inode {
			continue
		}
		if n.Gone {
			gone = n
		} else {
			own = n
		}
	}
	return gone, own
}

func tableFull(r *analyze.Report) *analyze.Finding {
	for i := range r.Findings {
		if r.Findings[i].ID == "table-full" {
			return &r.Findings[i]
		}
	}
	return nil
}

// testNS is a namespace this test deletes itself, before its end.
type testNS struct {
	name    string
	deleted bool
}

func newNS(t *testing.T) *testNS {
	t.Helper()
	var rb [4]byte
	rand.Read(rb[:])
	n := &testNS{name: "ctdtest-" + hex.EncodeToString(rb[:])}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.name, err, out)
	}
	t.Cleanup(func() {
		if !n.deleted {
			n.del(t)
		}
	})
	return n
}

func (n *testNS) inode(t *testing.T) uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/"+n.name, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func (n *testNS) del(t *testing.T) {
	if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
	}
	n.deleted = true
}

func (n *testNS) run(t *testing.T, argv ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.name}, argv...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v: %s", strings.Join(argv, " "), n.name, err, out)
	}
	return string(out)
}

// fillAndDrop fills n's table to the global max and drops pings until the
// kernel has logged a "table full in netns N" line for it (net_ratelimit
// may swallow one: a ping every 6 s, three times, outlasts it).
func fillAndDrop(t *testing.T, n *testNS, flows string) {
	t.Helper()
	n.run(t, "ip", "link", "set", "lo", "up")
	cmd := exec.Command("ip", "netns", "exec", n.name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nstest.TrackRuleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v: %s", n.name, err, out)
	}
	n.run(t, "conntrack", "-R", flows)
	want := fmt.Sprintf("table full in netns %d, dropping packet", n.inode(t))
	for attempt := 1; attempt <= 3; attempt++ {
		if attempt > 1 {
			time.Sleep(6 * time.Second)
		}
		if out, err := exec.Command("ip", "netns", "exec", n.name, "ping", "-c1", "-W1", "127.0.0.1").CombinedOutput(); err == nil {
			t.Fatalf("ping got through a full table in %s: %s", n.name, out)
		}
		if logged(t, n) {
			return
		}
	}
	t.Fatalf("no %q line after three drops 6 s apart", want)
}

// logged reports whether the log has an event of n's number since n was created.
func logged(t *testing.T, n *testNS) bool {
	snap, err := host.Read(context.Background(), host.Options{Root: "/", NetNS: n.name, Log: true})
	if err != nil {
		t.Fatal(err)
	}
	_, own := entries(snap.Log, n.inode(t))
	return own != nil && own.Count > 0
}
