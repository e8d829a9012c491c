package watch

import (
	"cmp"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/host/ctnetlink"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// burst makes n short TCP connections to a server on 127.0.0.1 inside the
// namespace (client and server in this process): each one sends a byte,
// gets a byte back, and both sides close, which leaves its entry in
// TIME_WAIT for two minutes.
func burst(t *testing.T, ns *nstest.NS, n int) {
	t.Helper()
	err := ns.Do(func() error {
		l, err := net.Listen("tcp", "127.0.0.1:0") // made on this thread: in the namespace
		if err != nil {
			return err
		}
		defer l.Close()
		go func() { // accepts: the sockets are the listener's namespace's
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					var b [1]byte
					if _, err := io.ReadFull(c, b[:]); err == nil {
						_, _ = c.Write(b[:])
					}
				}()
			}
		}()
		for i := range n {
			c, err := net.Dial("tcp", l.Addr().String()) // the dialling socket is made on this thread too
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			var b [1]byte
			_, err = c.Write([]byte{'x'})
			if err == nil {
				_, err = io.ReadFull(c, b[:])
			}
			c.Close()
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// aggregate is conntrack -L's table counted the way a frame shows it,
// computed here from the parsed entries with plain maps: by TCP state, by
// protocol, and the top sources, destinations and services (K rows and
// "other").
type aggregate struct {
	total                                int64
	byState, byProto, src, dst, svc      []Row
	stateMap, protoMap, srcM, dstM, svcM map[string]int64
}

func aggregateOf(flows []conntrack.Flow, k int) aggregate {
	a := aggregate{stateMap: map[string]int64{}, protoMap: map[string]int64{}, srcM: map[string]int64{}, dstM: map[string]int64{}, svcM: map[string]int64{}}
	for _, f := range flows {
		a.total++
		a.protoMap[f.Proto.String()]++
		if f.Proto == conntrack.TCP {
			a.stateMap[f.TCPState().String()]++
		}
		a.srcM[f.Orig.Src.String()]++
		a.dstM[f.Orig.Dst.String()]++
		if f.Proto.HasPorts() {
			a.svcM[netip.AddrPortFrom(f.Orig.Dst, f.Orig.DstPort).String()+"/"+f.Proto.String()]++
		}
	}
	all := func(m map[string]int64) []Row {
		var rows []Row
		for key, n := range m {
			rows = append(rows, Row{Key: key, Entries: n})
		}
		slices.SortFunc(rows, func(x, y Row) int { return cmp.Or(cmp.Compare(y.Entries, x.Entries), cmp.Compare(x.Key, y.Key)) })
		return rows
	}
	top := func(m map[string]int64) []Row {
		rows := all(m)
		if len(rows) <= k {
			return rows
		}
		var rest int64
		for _, r := range rows[k:] {
			rest += r.Entries
		}
		return append(rows[:k:k], Row{Key: "other", Entries: rest})
	}
	a.byState, a.byProto = all(a.stateMap), all(a.protoMap)
	a.src, a.dst, a.svc = top(a.srcM), top(a.dstM), top(a.svcM)
	return a
}

// listConntrack parses conntrack -L with the conntrack package's reader.
func listConntrack(t *testing.T, ns *nstest.NS) []conntrack.Flow {
	t.Helper()
	out := ns.Run("conntrack", "-L")
	var flows []conntrack.Flow
	st := &conntrack.ReadStats{}
	err := conntrack.ReadAllStats(strings.NewReader(out), st)(func(f *conntrack.Flow) error {
		flows = append(flows, *f)
		return nil
	})
	if err != nil || st.Skipped > 0 {
		t.Fatalf("conntrack -L: %v (%d lines skipped)", err, st.Skipped)
	}
	return flows
}

// stripDelta drops the deltas: only the counts are compared.
func stripDelta(rows []Row) []Row {
	out := make([]Row, len(rows))
	for i, r := range rows {
		out[i] = Row{Key: r.Key, Entries: r.Entries}
	}
	return out
}

// diffFrame says how a frame's counts differ from conntrack -L's ("" when
// they are the same).
func diffFrame(f Frame, a aggregate) string {
	var d []string
	for _, c := range []struct {
		name      string
		got, want []Row
	}{{"by state", f.ByState, a.byState}, {"by protocol", f.ByProto, a.byProto}, {"top sources", f.TopSources, a.src},
		{"top destinations", f.TopDests, a.dst}, {"top services", f.TopServices, a.svc}} {
		if got := stripDelta(c.got); !slices.Equal(got, c.want) {
			d = append(d, fmt.Sprintf("%s: watch %s, conntrack -L %s", c.name, rowsString(got), rowsString(c.want)))
		}
	}
	return strings.Join(d, "\n")
}

// diffTable compares a watcher's whole table (every key, not only the top
// rows) with conntrack -L's.
func diffTable(n *nsWatch, a aggregate) string {
	b, ok := n.tableRows(1 << 30)
	if !ok {
		return "no table yet"
	}
	asMap := func(rows []Row) map[string]int64 {
		m := map[string]int64{}
		for _, r := range rows {
			m[r.Key] = r.Entries
		}
		return m
	}
	var d []string
	for _, c := range []struct {
		name      string
		got, want map[string]int64
	}{{"state", asMap(b.byState), a.stateMap}, {"protocol", asMap(b.byProto), a.protoMap}, {"source", asMap(b.sources), a.srcM},
		{"destination", asMap(b.dests), a.dstM}, {"service", asMap(b.service), a.svcM}} {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			d = append(d, fmt.Sprintf("every %s: watch %v, conntrack -L %v", c.name, c.got, c.want))
		}
	}
	if b.total != a.total {
		d = append(d, fmt.Sprintf("total: watch %d, conntrack -L %d", b.total, a.total))
	}
	return strings.Join(d, "\n")
}

// waitEqual waits until the watcher's latest frame and whole table match
// conntrack -L (read before and after the frame, and unchanged between),
// failing after a generous deadline with the difference.
func waitEqual(t *testing.T, w *Watch, label string, ns *nstest.NS, k int) Frame {
	t.Helper()
	n := w.nsByLabel(label)
	deadline := time.Now().Add(90 * time.Second)
	for {
		before := aggregateOf(listConntrack(t, ns), k)
		f, _ := w.Frame(label)
		tabDiff := diffTable(n, before)
		after := aggregateOf(listConntrack(t, ns), k)
		stable := fmt.Sprint(before) == fmt.Sprint(after)
		diff := diffFrame(f, before)
		if stable && diff == "" && tabDiff == "" && f.Count == before.total {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the watch never matched conntrack -L (table stable between two reads: %v; nf_conntrack_count %d, listed %d):\n%s\n%s",
				label, stable, f.Count, before.total, diff, tabDiff)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// nsByLabel returns the namespace watch of a label (tests).
func (w *Watch) nsByLabel(label string) *nsWatch {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.list {
		if n.label == label {
			return n
		}
	}
	return nil
}

// insertVariety adds UDP entries from 15 sources, source i holding i
// entries (120 in all, an hour to live), so that the top tables have more
// keys than rows.
func insertVariety(t *testing.T, ns *nstest.NS) int {
	t.Helper()
	file := filepath.Join(t.TempDir(), "variety.txt")
	var b strings.Builder
	n := 0
	for i := 1; i <= 15; i++ {
		for j := range i {
			fmt.Fprintf(&b, "-I -p udp -s 10.5.0.%d -d 10.6.0.%d --sport %d --dport %d -t 3600\n", i, i%4, 1000+j, 53+i%3)
			n++
		}
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.LoadFlows(file)
	return n
}

// TestEventsAndPollingMatchConntrackL is the acceptance test of the data
// layer: after a burst of 10,000 short connections on loopback, the
// counts kept by events alone (one listing, at the start) and the counts
// of a watcher that lists the table at every refresh are both those of
// conntrack -L — by TCP state, protocol, source, destination and service,
// in the frames' top tables and in the whole tables.
func TestEventsAndPollingMatchConntrackL(t *testing.T) {
	ns := nstest.New(t, "conntrack", "nft")
	ns.Track()
	extra := insertVariety(t, ns)
	const conns = 10000
	ctx := t.Context()
	// A receive buffer far larger than the burst's events: the events
	// path is tested, not its loss.
	ev, err := Open(ctx, []string{ns.Name}, false, Options{Interval: 200 * time.Millisecond, ListEvery: time.Hour,
		EventBuffer: 256 << 20, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	poll, err := Open(ctx, []string{ns.Name}, false, Options{Interval: 200 * time.Millisecond, Polling: true, NoReport: true, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	defer poll.Close()
	evw, pollw := ev.(*Watch), poll.(*Watch)
	waitListed(t, evw, ns.Name)
	waitListed(t, pollw, ns.Name)

	// The new entries per second during the burst, both ways.
	var newEv, newPoll float64
	sampled := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			f, _ := ev.Frame(ns.Name)
			newEv = max(newEv, f.NewPerSec)
			f, _ = poll.Frame(ns.Name)
			newPoll = max(newPoll, f.NewPerSec)
		}
	}()
	burst(t, ns, conns)
	time.Sleep(time.Second) // a refresh of each after the last connection
	close(stop)
	<-sampled
	t.Logf("new entries/s at most: %.0f from events, %.0f from listings", newEv, newPoll)
	if newEv <= 0 || newPoll <= 0 {
		t.Errorf("new entries/s during the burst: %.0f from events, %.0f from listings; want both above 0", newEv, newPoll)
	}

	fe := waitEqual(t, evw, ns.Name, ns, DefaultTopK)
	fp := waitEqual(t, pollw, ns.Name, ns, DefaultTopK)
	t.Logf("events:  count %d, by state %s, top services %s", fe.Count, rowsString(fe.ByState), rowsString(fe.TopServices))
	t.Logf("polling: count %d, by state %s", fp.Count, rowsString(fp.ByState))
	// A new connection on the ports of one in TIME_WAIT replaces its
	// entry, so fewer than conns+extra may be left; waitEqual checked the
	// count against conntrack -L's.
	if fe.Count <= int64(extra) || fe.Count > int64(conns+extra) {
		t.Errorf("count %d, want more than the %d inserted entries and at most %d more", fe.Count, extra, conns)
	}
	if fe.Mode != ModeEvents || fe.ModeReason != "" || fp.Mode != ModePolling || !strings.Contains(fp.ModeReason, "asked for") {
		t.Errorf("modes: events watcher %q (%q), polling watcher %q (%q)", fe.Mode, fe.ModeReason, fp.Mode, fp.ModeReason)
	}
	// The events watcher listed the table once, at the start: everything
	// since came from events, one new event per connection.
	st := evw.nsByLabel(ns.Name).snapshotStats()
	t.Logf("events watcher: %+v", st)
	if st.listings != 1 || st.driftLists != 0 || st.lost != 0 {
		t.Errorf("events watcher: %d listings (%d for drift), %d losses; want the first listing only", st.listings, st.driftLists, st.lost)
	}
	if st.newEvents != conns {
		t.Errorf("%d new events, want one per connection (%d)", st.newEvents, conns)
	}
	if ps := pollw.nsByLabel(ns.Name).snapshotStats(); ps.listings < 3 || ps.events != 0 {
		t.Errorf("polling watcher: %+v, want a listing at every refresh and no events", ps)
	}
	// The first diagnosis was made from the first listing: the inserted
	// entries, before the burst.
	if fe.Report == nil {
		t.Errorf("no diagnosis (error %q)", fe.ReportError)
	} else if fe.Report.Table.Listed != int64(extra) || fe.Report.Host.Source != "netlink" {
		t.Errorf("diagnosis: %d entries listed from %q, want the %d of the first listing from netlink",
			fe.Report.Table.Listed, fe.Report.Host.Source, extra)
	}
}

// waitListed waits for a namespace's first listing.
func waitListed(t *testing.T, w *Watch, label string) Frame {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		f, ok := w.Frame(label)
		if ok && (!f.ListedAt.IsZero() || f.Err != "") {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no listing within 60 s: %+v", label, f)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLostEventsSwitchToPolling forces a loss: the event socket gets the
// kernel's smallest receive buffer and its reader is held during the
// burst. The watcher must say it polls because events were lost
// (ENOBUFS), end equal to conntrack -L, and after PollFor go back to
// events, still equal.
func TestLostEventsSwitchToPolling(t *testing.T) {
	ns := nstest.New(t, "conntrack", "nft")
	ns.Track()
	insertVariety(t, ns)
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	var released bool
	release := func() {
		if !released {
			released = true
			close(hold)
		}
	}
	testHookEventsRead = func() {
		select {
		case held <- struct{}{}:
		default:
		}
		<-hold
	}
	t.Cleanup(func() { testHookEventsRead = nil })
	src, err := Open(t.Context(), []string{ns.Name}, false, Options{Interval: 200 * time.Millisecond, ListEvery: time.Hour,
		PollFor: 4 * time.Second, EventBuffer: 1, NoReport: true, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { release(); src.Close() }()
	w := src.(*Watch)
	f := waitListed(t, w, ns.Name)
	if f.Mode != ModeEvents {
		t.Fatalf("mode %q (%q) before the burst", f.Mode, f.ModeReason)
	}
	<-held // the reader waits
	burst(t, ns, 3000)
	release()
	deadline := time.Now().Add(60 * time.Second)
	for f.Mode != ModePolling {
		if time.Now().After(deadline) {
			t.Fatalf("still %q (%q) after the loss", f.Mode, f.ModeReason)
		}
		time.Sleep(50 * time.Millisecond)
		f, _ = w.Frame(ns.Name)
	}
	if !strings.Contains(f.ModeReason, "events lost (ENOBUFS) at ") || !strings.Contains(f.ModeReason, ", polling until ") {
		t.Errorf("mode reason %q", f.ModeReason)
	}
	t.Logf("%s: %s", f.Mode, f.ModeReason)
	f = waitEqual(t, w, ns.Name, ns, DefaultTopK)
	if f.Mode != ModePolling {
		t.Logf("equal to conntrack -L in %s mode (%s)", f.Mode, f.ModeReason)
	}
	// Back to events after PollFor, with a listing that mends what was missed.
	deadline = time.Now().Add(60 * time.Second)
	for f.Mode != ModeEvents {
		if time.Now().After(deadline) {
			t.Fatalf("still %q (%q) long after PollFor", f.Mode, f.ModeReason)
		}
		time.Sleep(100 * time.Millisecond)
		f, _ = w.Frame(ns.Name)
	}
	if !strings.Contains(f.ModeReason, "events again since") {
		t.Errorf("back to events: reason %q", f.ModeReason)
	}
	waitEqual(t, w, ns.Name, ns, DefaultTopK)
	st := w.nsByLabel(ns.Name).snapshotStats()
	t.Logf("stats %+v", st)
	if st.lost < 1 {
		t.Errorf("no loss counted: %+v", st)
	}
}

// netnsCookie is the cookie of the namespace at path (SO_NETNS_COOKIE of
// a socket made in it), which identifies it beyond its inode.
func netnsCookie(t *testing.T, path string) uint64 {
	t.Helper()
	var cookie uint64
	err := host.InNetNS(path, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err != nil {
		t.Skipf("skipped: no SO_NETNS_COOKIE (Linux 5.14): %v", err)
	}
	return cookie
}

// socketsIn counts this process's sockets that belong to the namespace
// with the cookie, and its threads inside the namespace with the inode.
func socketsIn(t *testing.T, cookie, inode uint64) (sockets, threads int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, _ := os.Readlink("/proc/self/fd/" + e.Name()); !strings.HasPrefix(link, "socket:") {
			continue
		}
		if c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE); err == nil && c == cookie {
			sockets++
		}
	}
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		var st unix.Stat_t
		if unix.Stat("/proc/self/task/"+task.Name()+"/ns/net", &st) == nil && st.Ino == inode {
			threads++
		}
	}
	return sockets, threads
}

// addNetNS makes a namespace named name with a table that tracks
// loopback, deleted at the end of the test if still there (the test
// deletes it itself, which nstest's namespaces do not allow).
func addNetNS(t *testing.T, name string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run := func(args ...string) {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v in %s: %v: %s", args, name, err, out)
		}
	}
	run("ip", "link", "set", "lo", "up")
	run("conntrack", "-I", "-p", "udp", "-s", "10.1.1.1", "-d", "10.1.1.2", "--sport", "1", "--dport", "53", "-t", "600")
}

// A namespace deleted while watched: its frame says Gone and keeps its
// last counts, its goroutines end and no socket or thread of the watch
// is left in it (so the kernel can free it); a new namespace under the
// same name is watched again; Close leaves no goroutine behind.
func TestNamespaceDeletedWhileWatched(t *testing.T) {
	nstest.Require(t, "conntrack")
	before := runtime.NumGoroutine()
	name := "ctdtest-gone-" + strconv.Itoa(os.Getpid())
	addNetNS(t, name)
	path := "/run/netns/" + name
	cookie := netnsCookie(t, path)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	src, err := Open(t.Context(), []string{name}, false, Options{Interval: 100 * time.Millisecond, Discover: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	w := src.(*Watch)
	f := waitListed(t, w, name)
	n := w.nsByLabel(name)
	if f.Count != 1 || f.Gone {
		t.Fatalf("before: %+v", f)
	}
	if s, _ := socketsIn(t, cookie, st.Ino); s == 0 {
		t.Fatal("the watch holds no socket in the namespace: the check below would prove nothing")
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	select {
	case <-n.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the namespace's goroutines did not end")
	}
	f, ok := w.Frame(name)
	if !ok || !f.Gone || f.Count != 1 || f.ListedAt.IsZero() {
		t.Errorf("after the deletion: ok %v, %+v; want Gone with the last counts", ok, f)
	}
	if s, th := socketsIn(t, cookie, st.Ino); s != 0 || th != 0 {
		t.Errorf("%d sockets and %d threads still in the deleted namespace", s, th)
	}
	if got := w.Namespaces(); !slices.Equal(got, []string{name}) {
		t.Errorf("namespaces %v", got)
	}
	// A new namespace with the same name is watched again.
	addNetNS(t, name)
	deadline := time.Now().Add(60 * time.Second)
	for {
		f, _ = w.Frame(name)
		if !f.Gone && !f.ListedAt.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new namespace was not watched: %+v", f)
		}
		time.Sleep(50 * time.Millisecond)
	}
	src.Close()
	deadline = time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Namespaces that come and go are found with all: a new one is watched,
// a deleted one is marked Gone, then forgotten after KeepGone.
func TestAllNetNSComeAndGo(t *testing.T) {
	nstest.Require(t, "conntrack")
	src, err := Open(t.Context(), nil, true, Options{Interval: 200 * time.Millisecond, Discover: 200 * time.Millisecond,
		KeepGone: time.Second, NoReport: true, NoKernelLog: true, ListEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if ns := src.Namespaces(); len(ns) == 0 || !slices.Contains(ns, "init") {
		t.Errorf("namespaces at the start: %v, want init among them", ns)
	}
	name := "ctdtest-all-" + strconv.Itoa(os.Getpid())
	addNetNS(t, name)
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: namespaces %v", what, src.Namespaces())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wait("the new namespace is watched", func() bool {
		f, ok := src.Frame(name)
		return ok && f.Count == 1 && !f.ListedAt.IsZero()
	})
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	wait("the deleted namespace is Gone", func() bool { f, ok := src.Frame(name); return ok && f.Gone })
	wait("the deleted namespace is forgotten", func() bool { return !slices.Contains(src.Namespaces(), name) })
}

// When the event-kept count strays from nf_conntrack_count for a few
// refreshes — entries made while nobody listened send no events where
// net.netfilter.nf_conntrack_events is 2, on some kernels not even when
// they end — the watcher lists the table again before ListEvery. Here the
// table is made to stray by events for entries the kernel never had.
func TestDriftRelists(t *testing.T) {
	ns := nstest.New(t, "conntrack")
	insertVariety(t, ns)
	src, err := Open(t.Context(), []string{ns.Name}, false, Options{Interval: 200 * time.Millisecond, ListEvery: time.Hour,
		NoReport: true, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	w := src.(*Watch)
	waitListed(t, w, ns.Name)
	n := w.nsByLabel(ns.Name)
	for i := range 200 {
		ev := &ctnetlink.Event{Type: ctnetlink.EventNew}
		ev.Flow = conntrack.Flow{ID: uint32(i + 1), Family: conntrack.IPv4, Proto: conntrack.UDP,
			Orig: conntrack.Tuple{Src: netip.MustParseAddr("10.99.0.1"), Dst: netip.MustParseAddr("10.99.0.2"), SrcPort: uint16(i), DstPort: 53}}
		n.apply(ev)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := n.snapshotStats()
		if st.driftLists > 0 && st.listings > 1 {
			f := waitEqual(t, w, ns.Name, ns, DefaultTopK)
			t.Logf("after %d drift listing(s): %s", st.driftLists, rowsString(f.TopSources))
			return
		}
		if time.Now().After(deadline) {
			f, _ := w.Frame(ns.Name)
			t.Fatalf("no listing for a count that strayed: stats %+v, count %d, sources %s", st, f.Count, rowsString(f.TopSources))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// servers starts n TCP servers on 127.0.0.1 inside the namespace, each
// writing one byte to every connection and closing it, until the test
// ends; it returns their addresses.
func servers(t *testing.T, ns *nstest.NS, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		var l net.Listener
		err := ns.Do(func() (err error) {
			l, err = net.Listen("tcp", "127.0.0.1:0") // made on this thread: in the namespace
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		addrs = append(addrs, l.Addr().String())
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					_, _ = c.Write([]byte{'x'})
					c.Close()
				}()
			}
		}()
	}
	return addrs
}

// churn makes short TCP connections to the servers inside the namespace
// until the returned function is called, which waits for the last to end
// and returns how many were made: clients goroutines connect in turn to
// each server, read its byte and its close, then close. The server
// closing first leaves the entry in TIME_WAIT with the client's port free
// again, so with a small net.ipv4.ip_local_port_range the next connection
// from that port to that server reopens the entry in TIME_WAIT: the
// kernel ends the old entry and makes a new one of the same tuple.
func churn(ns *nstest.NS, addrs []string, clients int) (stop func() int) {
	done := make(chan struct{})
	made := make(chan int, clients)
	for i := range clients {
		go func() {
			n := 0
			_ = ns.Do(func() error { // the dialling sockets are made on this thread
				for j := i; ; j++ {
					select {
					case <-done:
						return nil
					default:
					}
					c, err := net.DialTimeout("tcp", addrs[j%len(addrs)], time.Second)
					if err != nil {
						time.Sleep(time.Millisecond) // every port busy for now
						continue
					}
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := io.Copy(io.Discard, c); err == nil {
						n++
					}
					c.Close()
				}
			})
			made <- n
		}()
	}
	return func() int {
		close(done)
		total := 0
		for range clients {
			total += <-made
		}
		return total
	}
}

// TestTimeWaitReuseMatchesConntrackL: the entries a watcher first lists
// may have been made when no events were sent (with
// net.netfilter.nf_conntrack_events=2, the default, while nobody
// listened; here, made deterministic, while it was 0), and such an entry
// ends without a destroy event. Under churn that reuses ports in
// TIME_WAIT, each of them is replaced by a new entry of the same tuple,
// with another ID: the watcher must count the new entry instead of the
// old one, not both. The connections go on while the watcher makes its
// first listing; after they stop and a refresh passes, the watcher's rows
// and whole table must be conntrack -L's with no listing besides the
// first: once with the connections going on for seconds after the
// listing (events only), once with them stopped as soon as the listing
// ended.
//
// The entries made without events are all in TIME_WAIT when listed (the
// connections made then have ended): such an entry changing state would
// not say so either, and only a listing could see it.
func TestTimeWaitReuseMatchesConntrackL(t *testing.T) {
	for _, c := range []struct {
		name  string
		after time.Duration // of churn after the first listing
	}{{"events after the listing", 3 * time.Second}, {"right after the listing", 0}} {
		t.Run(c.name, func(t *testing.T) { timeWaitReuse(t, c.after) })
	}
}

func timeWaitReuse(t *testing.T, after time.Duration) {
	ns := nstest.New(t, "conntrack", "nft")
	ns.Track()
	const ports, nservers = 300, 4
	ns.Run("sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40299", "net.netfilter.nf_conntrack_events=0")
	addrs := servers(t, ns, nservers)
	// Entries without events, in TIME_WAIT, their ports reused already.
	stop := churn(ns, addrs, 4)
	time.Sleep(3 * time.Second)
	conns := stop()
	quiet := aggregateOf(listConntrack(t, ns), DefaultTopK)
	if quiet.total < ports || quiet.stateMap["TIME_WAIT"] != quiet.total {
		t.Fatalf("after %d connections: %d entries, by state %v; want at least %d, all in TIME_WAIT", conns, quiet.total, quiet.stateMap, ports)
	}
	// Entries made from now on send events (1, not 2: also before the
	// watcher subscribes).
	ns.Run("sysctl", "-qw", "net.netfilter.nf_conntrack_events=1")
	stop = churn(ns, addrs, 4)
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	src, err := Open(t.Context(), []string{ns.Name}, false, Options{Interval: 200 * time.Millisecond, ListEvery: time.Hour,
		EventBuffer: 64 << 20, NoReport: true, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	w := src.(*Watch)
	n := w.nsByLabel(ns.Name)
	waitListed(t, w, ns.Name)
	// The most the frames' rows exceed nf_conntrack_count by, while the
	// first listing is the only one (a listing mends what events missed).
	var excess int64
	sampleDone, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			f, _ := w.Frame(ns.Name)
			var sum int64
			for _, r := range f.ByState {
				sum += r.Entries
			}
			if n.snapshotStats().listings == 1 {
				excess = max(excess, sum-f.Count)
			}
			select {
			case <-sampleDone:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	time.Sleep(after)
	conns = stop()
	stopped = true
	time.Sleep(time.Second) // a refresh after the last connection
	close(sampleDone)
	<-sampled
	deadline := time.Now().Add(30 * time.Second)
	for {
		before := aggregateOf(listConntrack(t, ns), DefaultTopK)
		f, _ := w.Frame(ns.Name)
		tabDiff := diffTable(n, before)
		after := aggregateOf(listConntrack(t, ns), DefaultTopK)
		st := n.snapshotStats()
		stable := fmt.Sprint(before) == fmt.Sprint(after)
		diff := diffFrame(f, before)
		if st.listings > 1 || st.lost > 0 {
			t.Fatalf("a listing besides the first (%d, %d for drift; %d event losses) before the watch matched conntrack -L; "+
				"before it the rows by state summed to up to %d more than nf_conntrack_count; now:\n%s\n%s",
				st.listings, st.driftLists, st.lost, excess, diff, tabDiff)
		}
		if stable && diff == "" && tabDiff == "" && f.Count == before.total {
			t.Logf("%d entries without events at the start, %d connections; equal at %d entries: %s; rows over the count by up to %d; %+v",
				quiet.total, conns, f.Count, rowsString(f.ByState), excess, st)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watch never matched conntrack -L (stable between two reads: %v; nf_conntrack_count %d, listed %d):\n%s\n%s",
				stable, f.Count, before.total, diff, tabDiff)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
