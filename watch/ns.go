package watch

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/host/ctnetlink"
)

// Bounds of a namespace's memory besides its table.
const (
	// maxKernelLog is the number of kernel-log events a frame keeps.
	maxKernelLog = 50
	// tombCap is the number of recently destroyed IDs remembered, so that
	// an update delivered after its entry's destroy event does not bring
	// the entry back.
	tombCap = 16 << 10
	// driftRefreshes is how many refreshes in a row the event-kept count
	// may stray from nf_conntrack_count before the table is listed again.
	driftRefreshes = 3
	// driftEvery is the least time between two such listings.
	driftEvery = 10 * time.Second
	// eventPause is how long the reader lets events gather in the socket
	// after a batch that did not fill: a wake-up per event would cost
	// more than the event, and frames come every Interval anyway. At
	// 100,000 events/s this is some 2 MB of the receive buffer.
	eventPause = 20 * time.Millisecond
)

// testHookEventsRead, when set, is called before each read of events (a
// test holds the reader to make the kernel drop events).
var testHookEventsRead func()

// target is a namespace to watch.
type target struct {
	label string
	path  string // the nsfs file to enter; "" is the caller's own namespace
	inode uint64
	init  bool
	spec  bool // given by the caller: kept when gone, and watched again when it comes back
}

// tombstones remember recently destroyed IDs, with the listing
// generation they ended in.
type tombstones struct {
	set  map[uint32]uint8
	ring []uint32
	next int
}

func (t *tombstones) add(id uint32, gen uint8) {
	if t.set == nil {
		t.set = make(map[uint32]uint8)
		t.ring = make([]uint32, 0, tombCap)
	}
	if len(t.ring) < tombCap {
		t.ring = append(t.ring, id)
	} else {
		delete(t.set, t.ring[t.next])
		t.ring[t.next] = id
		t.next = (t.next + 1) % tombCap
	}
	t.set[id] = gen
}

func (t *tombstones) has(id uint32) bool { _, ok := t.set[id]; return ok }
func (t *tombstones) del(id uint32)      { delete(t.set, id) }

// endedIn reports whether id ended in generation gen.
func (t *tombstones) endedIn(id uint32, gen uint8) bool {
	g, ok := t.set[id]
	return ok && g == gen
}

// nsStats count what a namespace's watch did (for tests and benchmarks).
type nsStats struct {
	events     uint64 // events applied
	newEvents  uint64 // of which new
	swept      uint64 // entries a listing found gone without an event
	replaced   uint64 // quiet entries ended by a new entry of their tuple
	listings   int    // listings finished
	reports    int    // diagnoses finished
	lost       int    // event losses reported by the kernel
	driftLists int    // listings made because the count strayed
}

// readerErr is what the event reader tells the control loop.
type readerErr struct {
	err   error
	fatal bool // the reader stopped
}

// nsWatch watches one namespace: a control loop refreshes the counters
// and frames every Interval and starts listings; a reader applies events
// to the table; a lister (one at a time) brings the table up to date
// with a full listing, with a diagnosis every ListEvery.
type nsWatch struct {
	opt Options
	target

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when every goroutine has ended
	wg     sync.WaitGroup
	gone   atomic.Bool

	lostc   chan readerErr
	listedc chan struct{}

	// Owned by the control loop.
	ev                *ctnetlink.Events
	statsConn         *ctnetlink.Conn
	prev              *counters
	counterErr        error
	rates             rates
	growth            growth
	lastRead          time.Time
	newRate           float64
	lastListStart     time.Time
	lastReportStart   time.Time
	drift             int
	lastDriftList     time.Time
	prevRows          map[string]map[string]int64
	listConn          *ctnetlink.Conn // the listers', one at a time
	listedBeforeStart time.Time       // start of the listing before the last, for the new-ID rate

	mu      sync.Mutex // guards what follows
	tab     *table
	listing bool
	tomb    tombstones
	// newDuring: the entries new events made during the listing under
	// way, by original tuple (tupleKey); see listedFlow.
	newDuring  map[uint64]uint32
	newEvents  int64
	stats      nsStats
	mode       Mode
	reason     string
	pollUntil  time.Time
	subscribed bool
	listedAt   time.Time
	listErr    error
	newIDRate  float64
	report     *analyze.Report
	reportErr  string
	diagnosing bool
	klog       []LogEvent
	klogErr    string
	frame      Frame
	goneAt     time.Time
}

func newNSWatch(parent context.Context, t target, opt Options) *nsWatch {
	ctx, cancel := context.WithCancel(parent)
	n := &nsWatch{opt: opt, target: t, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		lostc: make(chan readerErr, 1), listedc: make(chan struct{}, 1),
		growth: growth{window: opt.GrowthWindow}, newRate: -1, newIDRate: -1, rates: unknownRates,
		prevRows: map[string]map[string]int64{}, tab: newTable(1024)}
	n.frame = Frame{NetNS: t.label, Count: -1, Max: -1, Buckets: -1, Mode: ModeEvents,
		NewPerSec: -1, DropPerSec: -1, EarlyDropPerSec: -1, InsertFailedPerSec: -1, TimeToFull: -1}
	if opt.Polling {
		n.frame.Mode = ModePolling
	}
	go n.run()
	return n
}

// Frame returns the latest frame.
func (n *nsWatch) Frame() Frame {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.frame
}

func (n *nsWatch) run() {
	defer close(n.done)
	defer n.cleanup()
	n.start()
	t := time.NewTicker(n.opt.Interval)
	defer t.Stop()
	for !n.gone.Load() {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			n.refresh(true)
		case e := <-n.lostc:
			n.eventsFailed(e)
		case <-n.listedc:
			n.refresh(false)
		}
	}
}

// cleanup ends the goroutines and closes the sockets (the namespace is
// freed once nothing holds it).
func (n *nsWatch) cleanup() {
	n.cancel()
	if n.ev != nil {
		n.ev.Close()
	}
	n.wg.Wait()
	if n.listConn != nil {
		n.listConn.Close()
		n.listConn = nil
	}
	if n.statsConn != nil {
		n.statsConn.Close()
		n.statsConn = nil
	}
}

// start reads the counters (a first frame), subscribes to events unless
// polling, and starts the first listing.
func (n *nsWatch) start() {
	n.refresh(true)
	if n.gone.Load() || n.ctx.Err() != nil {
		return
	}
	now := time.Now()
	var mode Mode
	var reason string
	switch {
	case n.opt.Polling:
		mode, reason = ModePolling, "polling asked for: the whole table is listed at every refresh"
	case n.prev != nil && n.prev.events == 0:
		mode, reason = ModePolling, "net.netfilter.nf_conntrack_events is 0 in this namespace: the kernel sends no events"
	default:
		if err := n.subscribe(); err != nil {
			mode, reason = ModePolling, fmt.Sprintf("events unavailable (%v): polling", err)
		} else {
			mode = ModeEvents
		}
	}
	n.mu.Lock()
	n.mode, n.reason = mode, reason
	n.mu.Unlock()
	n.schedule(now, true)
	n.publish(now)
}

// subscribe opens the event socket and starts its reader.
func (n *nsWatch) subscribe() error {
	ev, err := ctnetlink.OpenEvents(n.path, ctnetlink.EventOptions{ReadBuffer: n.opt.EventBuffer})
	if err != nil {
		return err
	}
	n.ev = ev
	n.mu.Lock()
	n.subscribed = true
	n.mu.Unlock()
	n.wg.Add(1)
	go n.readEvents(ev)
	return nil
}

// readEvents applies events until the socket is closed. A loss is told
// to the control loop; so is any other error, and five of those in a row
// stop the reader.
func (n *nsWatch) readEvents(ev *ctnetlink.Events) {
	defer n.wg.Done()
	failures := 0
	for {
		if testHookEventsRead != nil {
			testHookEventsRead()
		}
		k, err := ev.Read(n.apply)
		if k > 0 {
			failures = 0
		}
		switch {
		case err == nil:
			if k < ctnetlink.MaxBatch {
				time.Sleep(eventPause)
			}
			continue
		case errors.Is(err, ctnetlink.ErrClosed):
			return
		case errors.Is(err, ctnetlink.ErrEventsLost):
			n.tell(readerErr{err: err})
			continue
		}
		failures++
		fatal := failures >= 5
		n.tell(readerErr{err: err, fatal: fatal})
		if fatal {
			n.mu.Lock()
			n.subscribed = false
			n.mu.Unlock()
			return
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (n *nsWatch) tell(e readerErr) {
	select {
	case n.lostc <- e:
	case <-n.ctx.Done():
	}
}

// flowID is an entry's conntrack ID (CTA_ID); for a message without one
// (no kernel omits it) a hash of the original tuple.
func flowID(f *conntrack.Flow) uint32 {
	if f.ID != 0 {
		return f.ID
	}
	h := fnv.New32a()
	s, d := f.Orig.Src.As16(), f.Orig.Dst.As16()
	h.Write(s[:])
	h.Write(d[:])
	h.Write([]byte{byte(f.Proto), byte(f.Orig.SrcPort >> 8), byte(f.Orig.SrcPort), byte(f.Orig.DstPort >> 8), byte(f.Orig.DstPort),
		byte(f.Orig.ICMPID >> 8), byte(f.Orig.ICMPID), f.Orig.ICMPType, byte(f.Zone >> 8), byte(f.Zone)})
	return h.Sum32() | 1
}

// tupleKey is a 64-bit FNV-1a hash of an entry's original tuple, its
// protocol, family and zone: what makes an entry unique in the kernel's
// table (a collision of two live tuples is as likely as 2^-64).
func tupleKey(f *conntrack.Flow) uint64 {
	var b [42]byte
	s, d := f.Orig.Src.As16(), f.Orig.Dst.As16()
	copy(b[0:], s[:])
	copy(b[16:], d[:])
	b[32], b[33], b[34] = byte(f.Family), byte(f.Proto), f.Orig.ICMPType
	b[35], b[36], b[37] = f.Orig.ICMPCode, byte(f.Orig.SrcPort>>8), byte(f.Orig.SrcPort)
	b[38], b[39] = byte(f.Orig.DstPort>>8), byte(f.Orig.DstPort)
	b[40], b[41] = byte(f.Orig.ICMPID>>8), byte(f.Orig.ICMPID)
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h ^ uint64(f.Zone)*1099511628211
}

// apply applies one event to the table.
func (n *nsWatch) apply(ev *ctnetlink.Event) {
	id := flowID(&ev.Flow)
	n.mu.Lock()
	defer n.mu.Unlock()
	switch ev.Type {
	case ctnetlink.EventNew:
		n.tomb.del(id)
		n.newEvents++
		n.stats.newEvents++
		if n.tab.nquiet > 0 || n.listing {
			key := tupleKey(&ev.Flow)
			if old, ok := n.tab.replaceQuiet(id, key, entryOf(&ev.Flow)); ok {
				n.tomb.add(old, n.tab.gen) // a listing under way may still list it
				n.stats.replaced++
			}
			if n.listing {
				if n.newDuring == nil {
					n.newDuring = make(map[uint64]uint32)
				}
				n.newDuring[key] = id
			}
		}
	case ctnetlink.EventUpdate:
		if n.tomb.has(id) {
			return // delivered after the entry's end
		}
	case ctnetlink.EventDestroy:
		n.tomb.add(id, n.tab.gen)
		n.tab.remove(id)
		n.stats.events++
		return
	}
	n.stats.events++
	n.tab.put(id, entryOf(&ev.Flow), ev.HasState)
}

// eventsFailed handles a loss (or a failure) of events: the table is
// listed at every refresh for PollFor, then events are tried again.
func (n *nsWatch) eventsFailed(e readerErr) {
	now := time.Now()
	what := e.err.Error()
	if errors.Is(e.err, ctnetlink.ErrEventsLost) {
		what = "ENOBUFS"
	}
	until := now.Add(n.opt.PollFor)
	n.mu.Lock()
	n.stats.lost++
	n.mode, n.pollUntil = ModePolling, until
	n.reason = fmt.Sprintf("events lost (%s) at %s, polling until %s", what, now.Format("15:04:05"), until.Format("15:04:05"))
	if e.fatal {
		n.reason = fmt.Sprintf("events failed (%s) at %s, polling until %s", what, now.Format("15:04:05"), until.Format("15:04:05"))
	}
	n.mu.Unlock()
	n.schedule(now, false)
	n.publish(now)
}

// refresh makes a new frame; with read it first reads the counters
// (a refresh), without it publishes a finished listing's counts.
func (n *nsWatch) refresh(read bool) {
	now := time.Now()
	if read {
		if n.checkGone() {
			n.markGone(now)
			return
		}
		c, err := readCounters(n.path, n.netlinkStats)
		if err != nil {
			if errors.Is(err, host.ErrEnterNetNS) && n.checkGone() {
				n.markGone(now)
				return
			}
			n.counterErr = err
		} else {
			n.counterErr = nil
			n.rates = rateBetween(n.prev, &c)
			n.prev = &c
			if c.count >= 0 {
				n.growth.add(c.at, c.count)
			}
		}
		n.mu.Lock()
		if !n.lastRead.IsZero() {
			n.newRate = float64(n.newEvents) / now.Sub(n.lastRead).Seconds()
		}
		n.newEvents, n.lastRead = 0, now
		n.mu.Unlock()
		n.checkDrift(now)
		if !n.lastListStart.IsZero() { // after start: it lists first
			n.schedule(now, false)
		}
	}
	n.publish(now)
}

// checkGone reports whether the namespace's file no longer names it (it
// was deleted, or the process exited).
func (n *nsWatch) checkGone() bool {
	if n.path == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Stat(n.path, &st); err != nil {
		return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
	}
	return n.inode != 0 && st.Ino != n.inode
}

// markGone keeps the last frame, marked Gone; the control loop then ends
// and closes the sockets.
func (n *nsWatch) markGone(now time.Time) {
	n.gone.Store(true)
	n.cancel()
	n.mu.Lock()
	n.frame.Gone = true
	n.goneAt = now
	n.mu.Unlock()
}

// checkDrift counts the refreshes in a row where the event-kept total
// strays from nf_conntrack_count: entries that send no events (created
// while nobody listened, with net.netfilter.nf_conntrack_events=2) are
// only seen, and their end only noticed, by a listing.
func (n *nsWatch) checkDrift(now time.Time) {
	if n.prev == nil || n.prev.count < 0 {
		return
	}
	n.mu.Lock()
	ok := !n.listedAt.IsZero() && !n.listing && n.mode == ModeEvents
	var diff int64
	if ok {
		diff = n.tab.total - n.prev.count
	}
	n.mu.Unlock()
	if !ok {
		return
	}
	if diff < 0 {
		diff = -diff
	}
	if diff > max(n.prev.count/50, 64) {
		n.drift++
	} else {
		n.drift = 0
	}
}

// schedule starts a listing when one is due and none runs: in polling
// mode at every refresh, in events mode every ListEvery (and when the
// count strayed); a diagnosis goes with it every ListEvery. At the end
// of a polling period it goes back to events.
func (n *nsWatch) schedule(now time.Time, first bool) {
	if n.ctx.Err() != nil {
		return
	}
	n.mu.Lock()
	busy, diagnosing := n.listing, n.diagnosing
	mode, until, subscribed := n.mode, n.pollUntil, n.subscribed
	n.mu.Unlock()
	if busy {
		return
	}
	if mode == ModePolling && !n.opt.Polling && !until.IsZero() && !now.Before(until) {
		if subscribed || n.subscribe() == nil {
			n.mu.Lock()
			n.mode, n.pollUntil = ModeEvents, time.Time{}
			n.reason = fmt.Sprintf("events again since %s, after a loss", now.Format("15:04:05"))
			n.mu.Unlock()
			mode = ModeEvents
			first = true // relist: what was missed while polling
		} else {
			n.mu.Lock()
			n.pollUntil = now.Add(n.opt.PollFor)
			n.mu.Unlock()
		}
	}
	due := first || mode == ModePolling || now.Sub(n.lastListStart) >= n.opt.ListEvery
	if !due && n.drift >= driftRefreshes && now.Sub(n.lastDriftList) >= driftEvery {
		due = true
		n.lastDriftList = now
		n.drift = 0
		n.mu.Lock()
		n.stats.driftLists++
		n.mu.Unlock()
	}
	if !due {
		return
	}
	report := !n.opt.NoReport && !diagnosing && (n.lastReportStart.IsZero() || now.Sub(n.lastReportStart) >= n.opt.ListEvery)
	n.listedBeforeStart = n.lastListStart
	n.lastListStart = now
	if report {
		n.lastReportStart = now
	}
	n.mu.Lock()
	n.listing = true
	n.tab.begin()
	if report {
		n.diagnosing = true
	}
	n.mu.Unlock()
	n.wg.Add(1)
	go n.list(now, n.listedBeforeStart, report)
}

// netlinkStats reads the per-CPU counters over ctnetlink (kernels without
// /proc/net/stat/nf_conntrack).
func (n *nsWatch) netlinkStats() ([]conntrack.Stats, error) {
	if n.statsConn == nil {
		c, err := ctnetlink.Open(n.path)
		if err != nil {
			return nil, err
		}
		n.statsConn = c
	}
	st, err := n.statsConn.Stats()
	if err != nil {
		n.statsConn.Close()
		n.statsConn = nil
	}
	return st, err
}

// errNotListed: the diagnosis ended without listing the table.
var errNotListed = errors.New("the diagnosis ended without listing the table")

// list brings the table up to date with a full listing (with a
// diagnosis made from the same pass when report is set).
func (n *nsWatch) list(start, prevStart time.Time, report bool) {
	defer n.wg.Done()
	var fresh int64
	var err error
	if report {
		fresh, err = n.listDiagnosed()
	} else {
		fresh, err = n.dump(nil)
	}
	n.finish(start, prevStart, fresh, err)
	select {
	case n.listedc <- struct{}{}:
	default:
	}
}

// listDiagnosed lists the table through doctor.Run, which diagnoses the
// namespace from the entries as they pass: one listing for both. The
// diagnosis goes on (second counter sample, findings, the planner's
// fixes) after the listing; the table is up to date when the listing
// ends.
func (n *nsWatch) listDiagnosed() (int64, error) {
	type listed struct {
		fresh int64
		err   error
	}
	res := make(chan listed, 1)
	var called atomic.Bool
	src := func(fn func(*conntrack.Flow) error) error {
		if !called.CompareAndSwap(false, true) {
			return errors.New("watch: the table was listed for this diagnosis already")
		}
		fresh, err := n.dump(fn)
		res <- listed{fresh, err}
		return err
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		r, err := doctor.Run(n.ctx, doctor.Input{NetNS: n.path, LiveEntries: src}, doctor.Options{Interval: time.Second, Top: n.opt.TopK})
		if called.CompareAndSwap(false, true) {
			res <- listed{0, errNotListed}
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		n.diagnosing = false
		switch {
		case err == nil:
			n.report, n.reportErr = r.Report, ""
			n.stats.reports++
		case n.ctx.Err() == nil:
			n.reportErr = err.Error()
		}
		n.frame.Report, n.frame.ReportError = n.report, n.reportErr
	}()
	l := <-res
	if errors.Is(l.err, errNotListed) {
		return n.dump(nil)
	}
	return l.fresh, l.err
}

// dump lists the table into the current one (see table.listed), handing
// each entry to tee too when set; it returns how many entries were new
// to the table. An interrupted dump (the table changed under it) is tried
// again, unless tee saw its entries.
func (n *nsWatch) dump(tee func(*conntrack.Flow) error) (int64, error) {
	var fresh int64
	for attempt := 0; ; attempt++ {
		if n.listConn == nil {
			c, err := ctnetlink.Open(n.path)
			if err != nil {
				return 0, err
			}
			n.listConn = c
		}
		i := 0
		err := n.listConn.Dump(func(f *conntrack.Flow) error {
			if i++; i&4095 == 0 && n.ctx.Err() != nil {
				return n.ctx.Err()
			}
			id, e := flowID(f), entryOf(f)
			n.mu.Lock()
			if n.listedFlow(id, e, f) {
				fresh++
			}
			n.mu.Unlock()
			if tee != nil {
				return tee(f)
			}
			return nil
		})
		switch {
		case err == nil:
			return fresh, nil
		case errors.Is(err, ctnetlink.ErrInterrupted) && tee == nil && attempt < 2:
			continue // what the first pass saw stays marked
		case errors.Is(err, ctnetlink.ErrInterrupted):
			return fresh, nil // as good as it gets: the events and the next listing mend it
		}
		if n.ctx.Err() == nil {
			n.listConn.Close()
			n.listConn = nil
		}
		return fresh, err
	}
}

// listedEntry records an entry of the listing under way, unless an event
// ended it after the listing saw it (n.mu held); it reports whether the
// entry was new to the table.
func (n *nsWatch) listedEntry(id uint32, e entry) bool {
	return !n.tomb.endedIn(id, n.tab.gen) && n.tab.listed(id, e)
}

// listedFlow is listedEntry for a listed entry f of the kernel's.
//
// An entry new to the table is not recorded when a new event during the
// listing gave its tuple to another entry still in the table: it is
// older than that one and has ended (the listing's message was read
// after the event), or it is newer, made while the watch listened, and
// its own new event is on its way. Else it is marked quiet (see
// rec.quiet), as no event named it yet.
func (n *nsWatch) listedFlow(id uint32, e entry, f *conntrack.Flow) bool {
	if n.tomb.endedIn(id, n.tab.gen) {
		return false
	}
	if !n.subscribed {
		return n.tab.listed(id, e)
	}
	if old, known := n.tab.flows[id]; known { // the usual case: no tuple to hash
		fresh := n.tab.listedAs(id, e, old, true)
		if fresh { // another connection under a known ID
			n.tab.markQuiet(id, tupleKey(f))
		}
		return fresh
	}
	key := tupleKey(f)
	if other, ok := n.newDuring[key]; ok {
		if _, there := n.tab.flows[other]; there {
			return false
		}
	}
	n.tab.listedAs(id, e, rec{}, false)
	n.tab.markQuiet(id, key)
	return true
}

// finish ends a listing: what it did not see, and no event changed, is
// gone. A failed listing leaves the table as it is.
func (n *nsWatch) finish(start, prevStart time.Time, fresh int64, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.listing = false
	n.newDuring = nil
	if err != nil {
		if n.ctx.Err() == nil {
			n.listErr = err
		}
		return
	}
	n.stats.swept += uint64(n.tab.sweep())
	if !n.subscribed && !prevStart.IsZero() {
		// Without events, the new entries are those a listing finds that
		// the one before did not have: fewer than were made, as some came
		// and went in between.
		if dt := start.Sub(prevStart).Seconds(); dt > 0 {
			n.newIDRate = float64(fresh) / dt
		}
	}
	n.listedAt = time.Now()
	n.listErr = nil
	n.stats.listings++
}

// publish makes the frame of now.
func (n *nsWatch) publish(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gone.Load() {
		return
	}
	f := Frame{Time: now, NetNS: n.label, Count: -1, Max: -1, Buckets: -1, Mode: n.mode, ModeReason: n.reason,
		ListedAt: n.listedAt, Report: n.report, ReportError: n.reportErr, KernelLog: n.frame.KernelLog, KernelLogError: n.klogErr}
	if f.Mode == "" {
		f.Mode = n.frame.Mode
	}
	if c := n.prev; c != nil {
		f.Count, f.Max, f.Buckets = c.count, c.max, c.buckets
		if c.count >= 0 && c.max > 0 {
			f.Usage = float64(c.count) / float64(c.max)
		}
	}
	r := n.rates
	f.DropPerSec, f.EarlyDropPerSec, f.InsertFailedPerSec = r.drop, r.earlyDrop, r.insertFailed
	// New entries: the new events, else the entries a listing found that
	// the one before did not have (fewer: some came and went between).
	f.NewPerSec = n.newIDRate
	if n.subscribed {
		f.NewPerSec = n.newRate
	}
	f.TimeToFull = n.growth.timeToFull(f.Count, f.Max)
	switch {
	case n.counterErr != nil:
		f.Err = n.counterErr.Error()
	case n.listErr != nil:
		f.Err = listError(n.listErr)
	}
	if !n.listedAt.IsZero() { // the counts of a first listing under way are not whole
		b := n.tab.rows(n.opt.TopK)
		f.ByState = n.delta("state", b.byState)
		f.ByProto = n.delta("proto", b.byProto)
		f.TopSources = n.delta("src", b.sources)
		f.TopDests = n.delta("dst", b.dests)
		f.TopServices = n.delta("svc", b.service)
	}
	n.frame = f
}

// delta sets each row's change since the previous frame (0 in the first
// frame with rows) and remembers the rows for the next.
func (n *nsWatch) delta(table string, rows []Row) []Row {
	prev, seen := n.prevRows[table]
	cur := make(map[string]int64, len(rows))
	for i := range rows {
		if seen {
			rows[i].Delta = rows[i].Entries - prev[rows[i].Key]
		}
		cur[rows[i].Key] = rows[i].Entries
	}
	n.prevRows[table] = cur
	return rows
}

func listError(err error) string {
	if errors.Is(err, ctnetlink.ErrPermission) {
		return fmt.Sprintf("listing the table needs CAP_NET_ADMIN: run as root (%v)", err)
	}
	return fmt.Sprintf("list the table: %v", err)
}

// addLog adds a kernel-log event to the namespace's frame at once.
func (n *nsWatch) addLog(ev host.TableFullEvent) {
	e := LogEvent{Time: ev.Time, Count: 1 + ev.Suppressed, Message: ev.Text}
	if ev.Notice {
		e.Count = ev.Suppressed
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.klog = append(n.klog, e)
	if len(n.klog) > maxKernelLog {
		n.klog = append(n.klog[:0], n.klog[len(n.klog)-maxKernelLog:]...)
	}
	n.frame.KernelLog = append([]LogEvent(nil), n.klog...)
}

// setKernelLogError says why the kernel log is not followed.
func (n *nsWatch) setKernelLogError(msg string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.klogErr = msg
	n.frame.KernelLogError = msg
}

// snapshotStats returns the watch's counts (tests, benchmarks).
func (n *nsWatch) snapshotStats() nsStats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// tableRows returns the current table's breakdown, bypassing frames (tests).
func (n *nsWatch) tableRows(k int) (breakdown, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listedAt.IsZero() {
		return breakdown{}, false
	}
	return n.tab.rows(k), true
}
