package watch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ctdoctor/ctdoctor/host"
)

// Watch is the live picture of the namespaces [Open] was given: a
// [Source]. Each namespace is watched on goroutines of its own: a refresh
// every Options.Interval (counters, rates, a new frame), the kernel's
// conntrack events applied as they come, and a full listing every
// Options.ListEvery (every refresh when polling) that rebuilds the counts
// and feeds a diagnosis from the same pass.
type Watch struct {
	opt    Options
	specs  []string
	all    bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	list     []*nsWatch // in display order, gone ones included
	klogErr  string
	warnings []string
	closed   bool

	klog      *os.File
	closeOnce sync.Once
	closedc   chan struct{} // closed when Close has stopped everything
}

// Open starts watching: the namespaces specs name (a name from
// /run/netns, an absolute path to an nsfs file, or a PID), or the
// caller's own when there are none; with all, every namespace of the host
// besides, found again every Options.Discover as they come and go.
//
// A spec that names no namespace is an error, as are bad options; what
// fails later (a missing privilege, a namespace deleted while watched)
// shows in the frames (Frame.Err, Frame.Gone). The first frame of each
// namespace is there at once, with the counters; the breakdowns follow
// the first listing, the rates the second refresh, the report the first
// diagnosis. Close ends the watch; so does ctx.
func Open(ctx context.Context, specs []string, all bool, opt Options) (Source, error) {
	o, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	targets, err := resolveSpecs(specs, all)
	if err != nil {
		return nil, err
	}
	w := &Watch{opt: o, specs: specs, all: all, closedc: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(ctx)
	for _, t := range targets {
		w.list = append(w.list, newNSWatch(w.ctx, t, o))
	}
	if all {
		w.discoverAll()
	}
	if !o.NoKernelLog {
		w.followKernelLog()
	}
	if all || len(specs) > 0 {
		w.wg.Add(1)
		go w.discoverLoop()
	}
	context.AfterFunc(w.ctx, func() { w.Close() })
	return w, nil
}

// resolveSpecs turns the specs into targets (the own namespace when there
// are none and not all).
func resolveSpecs(specs []string, all bool) ([]target, error) {
	own, ownErr := host.ResolveNetNS("")
	if len(specs) == 0 && !all {
		if ownErr != nil {
			return nil, fmt.Errorf("watch: %w", ownErr)
		}
		return []target{{label: own.Name, inode: own.Inode, init: own.Init}}, nil
	}
	var out []target
	for _, spec := range specs {
		if slices.ContainsFunc(out, func(t target) bool { return t.label == spec }) {
			continue
		}
		t, err := resolveSpec(spec, own, ownErr)
		if err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
		out = append(out, t)
	}
	return out, nil
}

func resolveSpec(spec string, own host.NetNS, ownErr error) (target, error) {
	ns, err := host.ResolveNetNS(spec)
	if err != nil {
		return target{}, err
	}
	t := target{label: spec, path: ns.Path, inode: ns.Inode, init: ns.Init, spec: true}
	if ownErr == nil && ns.Inode == own.Inode {
		t.path = "" // the own namespace needs no thread switch
	}
	return t, nil
}

// Namespaces lists the labels of the namespaces watched, in a stable
// order: those given, then those found with all, as they were found.
func (w *Watch) Namespaces() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, len(w.list))
	for i, n := range w.list {
		out[i] = n.label
	}
	return out
}

// Frame returns the latest frame of the namespace labelled label.
func (w *Watch) Frame(label string) (Frame, bool) {
	w.mu.Lock()
	var n *nsWatch
	for _, x := range w.list {
		if x.label == label {
			n = x
			break
		}
	}
	w.mu.Unlock()
	if n == nil {
		return Frame{}, false
	}
	return n.Frame(), true
}

// Warnings says what --all-netns left out (too many namespaces, an
// unreadable /proc), newest last.
func (w *Watch) Warnings() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.warnings)
}

// Close stops every goroutine and closes every socket; it returns when
// they are. Closing twice does nothing more.
func (w *Watch) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		list := slices.Clone(w.list)
		klog := w.klog
		w.mu.Unlock()
		w.cancel()
		if klog != nil {
			klog.Close()
		}
		for _, n := range list {
			<-n.done
		}
		w.wg.Wait()
		close(w.closedc)
	})
	<-w.closedc
	return nil
}

// discoverLoop looks for namespaces that came (with all) or came back (a
// spec that was deleted), and forgets those gone for KeepGone (with all).
func (w *Watch) discoverLoop() {
	defer w.wg.Done()
	t := time.NewTicker(w.opt.Discover)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		w.rewatchSpecs()
		if w.all {
			w.discoverAll()
		}
	}
}

// rewatchSpecs watches again a namespace given by the caller that was
// deleted and exists again (a new one under the same name).
func (w *Watch) rewatchSpecs() {
	w.mu.Lock()
	var gone []*nsWatch
	for _, n := range w.list {
		if n.spec && n.gone.Load() {
			gone = append(gone, n)
		}
	}
	w.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	own, ownErr := host.ResolveNetNS("")
	for _, old := range gone {
		t, err := resolveSpec(old.label, own, ownErr)
		if err != nil {
			continue
		}
		w.replace(old, t)
	}
}

// replace puts a new watch of t where old was.
func (w *Watch) replace(old *nsWatch, t target) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	i := slices.Index(w.list, old)
	if i < 0 {
		return
	}
	n := newNSWatch(w.ctx, t, w.opt)
	if w.klogErr != "" {
		n.setKernelLogError(w.klogErr)
	}
	w.list[i] = n
}

// discoverAll adds the namespaces of the host not watched yet, and
// forgets the ones found before that are gone for KeepGone.
func (w *Watch) discoverAll() {
	list, err := host.ListNetNS()
	own, ownErr := host.ResolveNetNS("")
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	if err != nil {
		w.warn(fmt.Sprintf("--all-netns: %v", err))
	}
	now := time.Now()
	watched := map[uint64]bool{}
	labels := map[string]bool{}
	kept := w.list[:0]
	live := 0
	for _, n := range w.list {
		if n.gone.Load() && !n.spec {
			n.mu.Lock()
			at := n.goneAt
			n.mu.Unlock()
			if now.Sub(at) >= w.opt.KeepGone {
				continue
			}
		}
		kept = append(kept, n)
		labels[n.label] = true
		if !n.gone.Load() {
			watched[n.inode] = true
			live++
		}
	}
	w.list = kept
	for _, ns := range list {
		if ns.Inode == 0 || watched[ns.Inode] {
			continue
		}
		if live >= w.opt.MaxNetNS {
			w.warn(fmt.Sprintf("network namespace %s left out: more than %d namespaces", ns.Name, w.opt.MaxNetNS))
			continue
		}
		t := target{label: ns.Name, path: ns.Path, inode: ns.Inode, init: ns.Init}
		if ownErr == nil && ns.Inode == own.Inode {
			t.path = ""
		}
		if labels[t.label] {
			t.label += " [" + strconv.FormatUint(ns.Inode, 10) + "]"
		}
		n := newNSWatch(w.ctx, t, w.opt)
		if w.klogErr != "" {
			n.setKernelLogError(w.klogErr)
		}
		w.list = append(w.list, n)
		watched[ns.Inode], labels[t.label] = true, true
		live++
	}
}

// warn keeps a warning once (w.mu held).
func (w *Watch) warn(msg string) {
	if slices.Contains(w.warnings, msg) {
		return
	}
	if len(w.warnings) >= 100 {
		w.warnings = w.warnings[1:]
	}
	w.warnings = append(w.warnings, msg)
}

// followKernelLog follows the kernel log from now on and hands each
// table-full event to the namespace it names (the initial namespace's
// name none).
func (w *Watch) followKernelLog() {
	f, err := host.OpenKernelLog(true)
	if err != nil {
		w.setKernelLogError(err.Error())
		return
	}
	w.klog = f
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		err := host.FollowKernelLog(f, host.KernelLogBootTime(), w.kernelLogEvent)
		if w.ctx.Err() == nil && !errors.Is(err, os.ErrClosed) {
			w.setKernelLogError(fmt.Sprintf("kernel log: read: %v", err))
		}
	}()
}

func (w *Watch) kernelLogEvent(ev host.TableFullEvent) {
	w.mu.Lock()
	var to []*nsWatch
	for _, n := range w.list {
		if n.gone.Load() {
			continue
		}
		if (ev.NetNS != 0 && ev.NetNS == n.inode) || (ev.NetNS == 0 && n.init) {
			to = append(to, n)
		}
	}
	w.mu.Unlock()
	for _, n := range to {
		n.addLog(ev)
	}
}

func (w *Watch) setKernelLogError(msg string) {
	w.mu.Lock()
	w.klogErr = msg
	list := slices.Clone(w.list)
	w.mu.Unlock()
	for _, n := range list {
		n.setKernelLogError(msg)
	}
}

// complete reports whether a frame has all a one-shot view shows: the
// rates (a second counter sample) and, with report, the diagnosis (or
// why there is none); or an error, or the namespace gone.
func complete(f *Frame, report bool) bool {
	if f.Err != "" || f.Gone {
		return true
	}
	if f.Time.IsZero() || f.NewPerSec < 0 || f.ListedAt.IsZero() {
		return false
	}
	return !report || f.Report != nil || f.ReportError != ""
}

// Once watches the namespaces until each has a complete frame — its
// rates known (two counter samples), its table listed and, unless
// Options.NoReport, its first diagnosis made; or an error, or the
// namespace gone — and returns those frames in the order of Namespaces.
// When ctx ends first, it returns the frames as they are with ctx's
// error.
func Once(ctx context.Context, specs []string, all bool, opt Options) ([]Frame, error) {
	src, err := Open(ctx, specs, all, opt)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		var frames []Frame
		done := true
		for _, l := range src.Namespaces() {
			f, ok := src.Frame(l)
			if !ok {
				continue
			}
			done = done && complete(&f, !opt.NoReport)
			frames = append(frames, f)
		}
		if done && len(frames) > 0 {
			return frames, nil
		}
		select {
		case <-ctx.Done():
			return frames, ctx.Err()
		case <-t.C:
		}
	}
}
