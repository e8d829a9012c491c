package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
)

// Defaults and bounds of the Options.
const (
	DefaultBreakdownInterval = 30 * time.Second
	DefaultDiscoveryInterval = 15 * time.Second
	DefaultTopServices       = 10
	MaxTopServices           = 100
	DefaultMaxNetNS          = 256
	// scrapeWorkers bounds the namespaces read at once by one scrape.
	scrapeWorkers = 4
)

// ErrOptions is wrapped by New's error for invalid Options.
var ErrOptions = errors.New("invalid exporter options")

// Options configure an Exporter. The zero Options watch the exporter's own
// network namespace with the defaults above.
type Options struct {
	// NetNS are the namespaces to watch: names from /run/netns, absolute
	// nsfs paths or PIDs (as `ctdoctor --netns`). Empty: the exporter's
	// own namespace, unless AllNetNS.
	NetNS []string
	// AllNetNS watches every network namespace of the host, discovered
	// again every DiscoveryInterval as namespaces come and go.
	AllNetNS bool
	// MaxNetNS bounds the namespaces watched (0: DefaultMaxNetNS).
	MaxNetNS int
	// DiscoveryInterval is how often the namespaces are looked up again (0: the default).
	DiscoveryInterval time.Duration
	// BreakdownInterval is the time between two background listings of
	// each table (0: the default; negative: no background listing, so no
	// breakdown, findings or time to full).
	BreakdownInterval time.Duration
	// TopServices is K, the services exported by entries beside "other"
	// (0: the default; at most MaxTopServices).
	TopServices int
	// NoKernelLog does not follow the kernel log (no table-full event counter).
	NoKernelLog bool
	// PerCPU also exports every counter per CPU (ctdoctor_conntrack_cpu_stat_*,
	// one series per CPU and counter).
	PerCPU bool
	// Logger receives what fails in the background (nil: discarded).
	Logger *slog.Logger
	// Diagnose, when set, makes the background diagnosis of the namespace
	// at netnsPath ("" is the exporter's own) with the top tables cut at
	// top, instead of doctor.Run in this process: the command runs it in a
	// child process at a lower CPU priority, so that the listing's memory
	// is returned when it ends and scrapes keep the CPU while it runs.
	Diagnose func(ctx context.Context, netnsPath string, top int) (*analyze.Report, error)
}

// Exporter is a prometheus.Collector for the conntrack tables of one or
// more network namespaces. Make one with New, start its background work
// with Start, and register it.
type Exporter struct {
	opt   Options
	log   *slog.Logger
	descs *descs
	klog  *kernelLog

	mu      sync.Mutex
	targets []*target
	bd      map[string]*breakdownState // by target key
	warned  map[string]bool            // the discovery warnings logged last time

	// Concurrent scrapes share one collection (see collectShared).
	cmu         sync.Mutex
	inflight    *collection
	collections atomic.Int64
	// Test hooks: beforeRead runs at the start of each collection,
	// joinHook when a scrape joins the collection in flight, listingHook
	// when a background listing starts.
	beforeRead, joinHook, listingHook func()

	startOnce sync.Once
	wg        sync.WaitGroup
}

type collection struct {
	done    chan struct{}
	metrics []prometheus.Metric
}

// New checks the options and returns an Exporter that has looked up its
// namespaces once. A namespace given by name that does not exist (yet) is
// not an error: its metrics say _up 0 until it does.
func New(opt Options) (*Exporter, error) {
	if opt.BreakdownInterval == 0 {
		opt.BreakdownInterval = DefaultBreakdownInterval
	}
	if opt.DiscoveryInterval <= 0 {
		opt.DiscoveryInterval = DefaultDiscoveryInterval
	}
	if opt.TopServices == 0 {
		opt.TopServices = DefaultTopServices
	}
	if opt.MaxNetNS == 0 {
		opt.MaxNetNS = DefaultMaxNetNS
	}
	switch {
	case opt.TopServices < 0 || opt.TopServices > MaxTopServices:
		return nil, fmt.Errorf("%w: top services %d: want 1 to %d (every service is a time series per namespace)", ErrOptions, opt.TopServices, MaxTopServices)
	case opt.MaxNetNS < 0:
		return nil, fmt.Errorf("%w: max namespaces %d: want at least 1", ErrOptions, opt.MaxNetNS)
	case opt.BreakdownInterval > 0 && opt.BreakdownInterval < time.Second:
		return nil, fmt.Errorf("%w: breakdown interval %s: want at least 1s (each one lists the whole table)", ErrOptions, opt.BreakdownInterval)
	}
	for _, spec := range opt.NetNS {
		if spec == "" {
			return nil, fmt.Errorf("%w: an empty --netns value", ErrOptions)
		}
		if _, err := specPath(spec); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrOptions, err)
		}
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := &Exporter{opt: opt, log: log, descs: newDescs(opt.BreakdownInterval), klog: newKernelLog(),
		bd: map[string]*breakdownState{}}
	e.rediscover()
	return e, nil
}

// Start begins the background work: namespace discovery, the breakdown
// listings and following the kernel log, until ctx is done. Wait waits
// for it to end.
func (e *Exporter) Start(ctx context.Context) {
	e.startOnce.Do(func() {
		if !e.opt.NoKernelLog {
			if err := e.klog.start(); err != nil {
				e.log.Warn("kernel log table-full events are not exported", "err", err)
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				<-ctx.Done()
				e.klog.stop()
			}()
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			t := time.NewTicker(e.opt.DiscoveryInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					e.rediscover()
				}
			}
		}()
		if e.opt.BreakdownInterval > 0 {
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				e.breakdownLoop(ctx)
			}()
		}
	})
}

// Wait waits for the background work Start began to end (after its
// context is done).
func (e *Exporter) Wait() { e.wg.Wait() }

// rediscover looks the namespaces up again, keeping the breakdown state of
// those that are still there.
func (e *Exporter) rediscover() {
	ts, warnings := discover(e.opt.NetNS, e.opt.AllNetNS, e.opt.MaxNetNS)
	e.mu.Lock()
	defer e.mu.Unlock()
	// Say each warning once, not at every discovery.
	seen := map[string]bool{}
	for _, w := range warnings {
		seen[w] = true
		if !e.warned[w] {
			e.log.Warn(w)
		}
	}
	e.warned = seen
	keep := map[string]bool{}
	for _, t := range ts {
		keep[t.key()] = true
	}
	for k := range e.bd {
		if !keep[k] {
			delete(e.bd, k)
		}
	}
	e.targets = ts
}

// currentTargets returns the namespaces watched now.
func (e *Exporter) currentTargets() []*target {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.targets
}

// Describe sends the descriptions of every metric the exporter can export.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) { e.descs.describe(ch) }

// Collect reads every namespace's count, limit, buckets and counters (a
// few small procfs files each) and adds the cached breakdowns. Scrapes
// that arrive while a collection runs share its result.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	for _, m := range e.collectShared() {
		ch <- m
	}
}

// collectShared runs one collection, or waits for the one in flight.
func (e *Exporter) collectShared() []prometheus.Metric {
	e.cmu.Lock()
	if c := e.inflight; c != nil {
		e.cmu.Unlock()
		if e.joinHook != nil {
			e.joinHook()
		}
		<-c.done
		return c.metrics
	}
	c := &collection{done: make(chan struct{})}
	e.inflight = c
	e.cmu.Unlock()
	defer func() {
		e.cmu.Lock()
		e.inflight = nil
		e.cmu.Unlock()
		close(c.done)
	}()
	if e.beforeRead != nil {
		e.beforeRead()
	}
	c.metrics = e.collect()
	e.collections.Add(1)
	return c.metrics
}

// collect reads the namespaces, a few at a time.
func (e *Exporter) collect() []prometheus.Metric {
	ts := e.currentTargets()
	parts := make([][]prometheus.Metric, len(ts))
	sem := make(chan struct{}, scrapeWorkers)
	var wg sync.WaitGroup
	for i, t := range ts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			parts[i] = e.collectTarget(t)
		}()
	}
	wg.Wait()
	out := []prometheus.Metric{gauge(e.descs.namespaces, float64(len(ts)))}
	for _, p := range parts {
		out = append(out, p...)
	}
	return append(out, e.collectKernelLog(ts)...)
}

// collectTarget reads one namespace's table and adds its cached breakdown.
func (e *Exporter) collectTarget(t *target) []prometheus.Metric {
	d := e.descs
	var out []prometheus.Metric
	start := time.Now()
	var r tableRead
	err := t.err
	if err == nil {
		r, err = readTable(t.path)
	}
	out = append(out, gauge(d.scrapeDuration, time.Since(start).Seconds(), "table", t.label))
	if err != nil {
		e.log.Debug("namespace not read", "netns", t.label, "err", err)
		out = append(out, gauge(d.up, 0, "table", t.label))
		return out
	}
	out = append(out, gauge(d.up, 1, "table", t.label))
	if !r.active {
		return out // no conntrack here: nothing can fill
	}
	if r.count >= 0 {
		out = append(out, gauge(d.entries, float64(r.count), t.label))
	}
	if r.max >= 0 {
		out = append(out, gauge(d.limit, float64(r.max), t.label))
	}
	if r.buckets >= 0 {
		out = append(out, gauge(d.buckets, float64(r.buckets), t.label))
	}
	if r.count >= 0 && r.max > 0 {
		out = append(out, gauge(d.usage, float64(r.count)/float64(r.max), t.label))
	}
	if r.stats == nil {
		if r.statsErr != nil {
			e.log.Debug("counters not read", "netns", t.label, "err", r.statsErr)
		}
		out = append(out, gauge(d.up, 0, "stats", t.label))
	} else {
		out = append(out, gauge(d.up, 1, "stats", t.label), gauge(d.statsInfo, 1, t.label, r.statsSource))
		for f := conntrack.StatField(0); f < conntrack.NumStatFields; f++ {
			if d.stat[f] != nil && r.stats.Has(f) {
				out = append(out, counter(d.stat[f], float64(r.stats.Values[f]), t.label))
			}
		}
		if e.opt.PerCPU {
			for cpu, st := range r.perCPU {
				c := strconv.Itoa(cpu)
				for f := conntrack.StatField(0); f < conntrack.NumStatFields; f++ {
					if d.cpuStat[f] != nil && st.Has(f) {
						out = append(out, counter(d.cpuStat[f], float64(st.Values[f]), t.label, c))
					}
				}
			}
		}
	}
	return append(out, e.cachedBreakdown(t)...)
}

// collectKernelLog exports each namespace's table-full events.
func (e *Exporter) collectKernelLog(ts []*target) []prometheus.Metric {
	if e.opt.NoKernelLog {
		return nil
	}
	d := e.descs
	start := time.Now()
	active, err := e.klog.status()
	if !active {
		if err != nil {
			e.log.Debug("kernel log not followed", "err", err)
		}
		return []prometheus.Metric{gauge(d.up, 0, "kernel_log", ""), gauge(d.scrapeDuration, time.Since(start).Seconds(), "kernel_log", "")}
	}
	var out []prometheus.Metric
	for _, t := range ts {
		if t.err != nil {
			continue
		}
		if n, ok := e.klog.events(t); ok {
			out = append(out, counter(d.logEvents, float64(n), t.label))
		}
	}
	return append(out, gauge(d.up, 1, "kernel_log", ""), gauge(d.scrapeDuration, time.Since(start).Seconds(), "kernel_log", ""))
}
