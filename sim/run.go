package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
)

// Tick is the simulator's time resolution: packets due within the same
// tick see the same clock reading.
const Tick = time.Millisecond

// Sizes and windows of the simulated segments.
const (
	requestBytes  = 200
	responseBytes = 1200
	window        = 65535
	// rtoMin is Linux's minimum retransmission timeout, the first gap
	// before a dropped packet other than the first is sent again.
	rtoMin = 200 * time.Millisecond
	// dataRetries bounds the retransmissions of a dropped later packet.
	dataRetries = 6
)

// tracker is what the simulator needs of an [engine.Tracker].
type tracker interface {
	Process(*engine.Packet) engine.Verdict
	Count() int
	Counts() engine.Counts
	TotalStats() conntrack.Stats
}

// Options tune a run.
type Options struct {
	// Progress, when set, is called every 65,536 packets or so with the
	// virtual time reached and the packets simulated so far.
	Progress func(now time.Duration, packets uint64)
}

// Simulator runs one scenario against one tracker.
type Simulator struct {
	sc    *Scenario
	opt   Options
	et    *engine.Tracker
	tr    tracker
	clock *engine.VirtualClock
	rng   *rand.Rand
	max   int

	wl    []wstate
	conns []conn
	free  []uint32
	wheel wheel
	pkt   engine.Packet
	tick  int64
	now   time.Duration

	// run totals
	packets, started, failed, lost, retrans uint64
	fullDrops, chainDrops                   uint64 // packets conntrack dropped: table full, chain too long
	firstDrop, firstFullDrop, firstChain    time.Duration
	// the count: its highest value and when it was first reached, and when
	// it first reached the max (-1: never), measured at every insert
	peak           int
	peakAt, fullAt time.Duration

	res      *Result
	prevStat conntrack.Stats
	prevAt   time.Duration
	penult   conntrack.Stats // the counters one sample before the last
	penultAt time.Duration
	prevConn [2]uint64 // started, failed at the last sample
	ran      bool
}

// New prepares a simulation of sc (which it validates): a fresh tracker on
// a virtual clock at 0 with the scenario's settings and NOTRACK rules.
func New(sc *Scenario, opt Options) (*Simulator, error) {
	sc = sc.Clone()
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	clock := &engine.VirtualClock{}
	seed := sc.Seed
	if seed == 0 {
		seed = 1
	}
	et, err := engine.New(engine.Config{Settings: sc.Settings, Seed: seed, Clock: clock,
		NoTrack: sc.NoTrack, CPUs: sc.CPUs})
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", sc.Name, err)
	}
	s := newSimulator(sc, opt, et, clock)
	s.et = et
	return s, nil
}

func newSimulator(sc *Scenario, opt Options, tr tracker, clock *engine.VirtualClock) *Simulator {
	seed := sc.Seed
	s := &Simulator{sc: sc, opt: opt, tr: tr, clock: clock, firstDrop: -1, firstFullDrop: -1, firstChain: -1, fullAt: -1,
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	s.max = int(sc.EffectiveSettings()[engine.SetMax])
	s.wl = make([]wstate, len(sc.Workloads))
	for i := range sc.Workloads {
		s.wl[i].init(&sc.Workloads[i], sc)
	}
	return s
}

// Tracker returns the simulated table (after Run: its final state).
func (s *Simulator) Tracker() *engine.Tracker { return s.et }

// Clock returns the virtual clock the tracker runs on.
func (s *Simulator) Clock() *engine.VirtualClock { return s.clock }

// Scenario returns the scenario being run, with its defaults filled in.
func (s *Simulator) Scenario() *Scenario { return s.sc }

// Run is a shorthand for New and Simulator.Run.
func Run(ctx context.Context, sc *Scenario, opt Options) (*Result, error) {
	s, err := New(sc, opt)
	if err != nil {
		return nil, err
	}
	return s.Run(ctx)
}

// Run simulates the scenario's whole duration and returns the timeline and
// summary. A Simulator runs once.
func (s *Simulator) Run(ctx context.Context) (*Result, error) {
	if s.ran {
		return nil, fmt.Errorf("simulation %s: already run", s.sc.Name)
	}
	s.ran = true
	if ctx == nil {
		ctx = context.Background()
	}
	sc := s.sc
	s.res = &Result{Scenario: sc.Name, Description: sc.Description, Duration: sc.Duration, Step: sc.Step,
		Seed: sc.Seed, Settings: sc.EffectiveSettings(), Max: s.max, FirstDrop: -1,
		Timeline: make([]Sample, 0, int(sc.Duration/sc.Step)+2)}
	for i := range s.wl {
		s.wl[i].next = s.wl[i].start
		s.nextArrival(&s.wl[i])
	}
	end := int64(sc.Duration / Tick)
	nextSample := time.Duration(0)
	loops := 0
	lastCheck := uint64(0)
	for s.tick = 0; s.tick < end; {
		s.wheel.advance(s.tick)
		s.now = time.Duration(s.tick) * Tick
		for nextSample <= s.now {
			s.clock.Set(nextSample)
			s.sample(nextSample)
			nextSample += sc.Step
		}
		s.clock.Set(s.now)
		tickEnd := s.now + Tick
		for i := range s.wl {
			w := &s.wl[i]
			for w.next < tickEnd {
				s.start(i, w.next)
				s.nextArrival(w)
			}
		}
		for {
			list := s.wheel.take()
			if list == nil {
				break
			}
			for _, idx := range list {
				s.run(idx)
			}
			s.wheel.done(list)
		}
		// The next tick with something to do.
		nt := end
		if n := s.wheel.next(); n >= 0 && n < nt {
			nt = n
		}
		if t := ceilTick(nextSample); t < nt {
			nt = t
		}
		for i := range s.wl {
			if t := int64(s.wl[i].next / Tick); t < nt {
				nt = t
			}
		}
		if nt <= s.tick {
			nt = s.tick + 1
		}
		s.tick = nt
		// Every few thousand ticks, and every 65,536 packets: at millions
		// of connections per second one tick holds thousands of them.
		if loops++; loops&4095 == 0 || s.packets-lastCheck >= 1<<16 {
			lastCheck = s.packets
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if s.opt.Progress != nil {
				s.opt.Progress(s.now, s.packets)
			}
		}
	}
	s.wheel.advance(end)
	for nextSample <= sc.Duration {
		s.clock.Set(nextSample)
		s.sample(nextSample)
		nextSample += sc.Step
	}
	if last := s.res.Timeline[len(s.res.Timeline)-1].Time; last < sc.Duration {
		s.clock.Set(sc.Duration)
		s.sample(sc.Duration)
	}
	s.clock.Set(sc.Duration)
	s.finish()
	return s.res, nil
}

func ceilTick(d time.Duration) int64 { return int64((d + Tick - 1) / Tick) }

// run runs connection idx's steps due in the current tick, then schedules
// its next one (or frees it).
func (s *Simulator) run(idx uint32) {
	for {
		c := &s.conns[idx]
		if !s.step(c) {
			s.free = append(s.free, idx)
			return
		}
		if t := int64(c.at / Tick); t > s.tick {
			s.wheel.add(t, idx)
			return
		}
	}
}

func (s *Simulator) alloc() uint32 {
	if n := len(s.free); n > 0 {
		idx := s.free[n-1]
		s.free = s.free[:n-1]
		return idx
	}
	s.conns = append(s.conns, conn{})
	return uint32(len(s.conns) - 1)
}

// nextArrival draws the workload's next arrival after w.next (Poisson, by
// thinning for varying rates); past the workload's stop it is "never".
func (s *Simulator) nextArrival(w *wstate) {
	never := time.Duration(math.MaxInt64)
	if w.rmax <= 0 {
		w.next = never
		return
	}
	t := w.next
	for {
		gap := s.rng.ExpFloat64() / w.rmax * float64(time.Second)
		if gap > float64(w.stop-t) {
			w.next = never
			return
		}
		t += time.Duration(gap)
		if t >= w.stop {
			w.next = never
			return
		}
		if w.rate.Kind == Constant || s.rng.Float64()*w.rmax < w.rate.At(t, w.start, w.stop) {
			break
		}
	}
	if t == w.next {
		t++
	}
	w.next = t
}

// sample records the table at time t.
func (s *Simulator) sample(t time.Duration) {
	st := s.tr.TotalStats()
	smp := Sample{Time: t}
	sampleCounts(&smp, s.tr.Counts(), s.max)
	smp.DropTotal = st.Values[conntrack.StatDrop]
	smp.EarlyDropTotal = st.Values[conntrack.StatEarlyDrop]
	smp.InsertFailedTotal = st.Values[conntrack.StatInsertFailed]
	smp.ChainTooLongTotal = st.Values[conntrack.StatChainTooLong]
	p := &s.prevStat
	smp.Drop = smp.DropTotal - p.Values[conntrack.StatDrop]
	smp.EarlyDrop = smp.EarlyDropTotal - p.Values[conntrack.StatEarlyDrop]
	smp.InsertFailed = smp.InsertFailedTotal - p.Values[conntrack.StatInsertFailed]
	smp.ChainTooLong = smp.ChainTooLongTotal - p.Values[conntrack.StatChainTooLong]
	smp.Connections = s.started - s.prevConn[0]
	smp.Failed = s.failed - s.prevConn[1]
	s.penult, s.penultAt = s.prevStat, s.prevAt
	s.prevStat, s.prevAt, s.prevConn = st, t, [2]uint64{s.started, s.failed}
	s.res.Timeline = append(s.res.Timeline, smp)
}

// finish fills the result's summary.
func (s *Simulator) finish() {
	r := s.res
	r.Packets, r.Connections, r.Failed, r.Lost, r.Retransmits = s.packets, s.started, s.failed, s.lost, s.retrans
	r.FirstDrop, r.FirstTableFullDrop, r.FirstChainDrop = s.firstDrop, s.firstFullDrop, s.firstChain
	r.DroppedPackets = s.fullDrops + s.chainDrops
	r.Peak, r.PeakAt, r.FullAt = s.peak, s.peakAt, s.fullAt
	r.summarize()
}

// wstate is a workload prepared for running.
type wstate struct {
	rate              Rate
	start, stop, next time.Duration
	rmax              float64
	n                 uint64 // connections started

	proto    conntrack.Proto
	family   conntrack.Family
	iface    string
	c2s, s2c engine.Hook
	kind     Kind
	flood    bool
	dns      bool
	closerC  bool
	half     time.Duration
	lifetime Dist
	interval Dist
	middle   time.Duration
	unans    float64
	retries  uint8
	cpus     uint64

	clients []netip.Prefix
	cw      []float64 // cumulative client prefix weights
	client1 bool      // one client address
	servers []netip.Addr
	srvPfx  []netip.Prefix
	sport   engine.PortRange
	nports  uint64
	rr      uint64 // round-robin destinations (0: random)
	cport   engine.PortRange
	cspan   uint64
}

func (w *wstate) init(wl *Workload, sc *Scenario) {
	w.rate = wl.Rate
	w.rmax = wl.Rate.Max()
	w.start, w.stop = wl.Start, wl.Stop
	if w.stop == 0 || w.stop > sc.Duration {
		w.stop = sc.Duration
	}
	w.proto = wl.Proto
	w.family = conntrack.IPv4
	if wl.Servers[0].Addr().Is6() {
		w.family = conntrack.IPv6
		if w.proto == conntrack.ICMP {
			w.proto = conntrack.ICMPv6
		}
	}
	w.iface = wl.Iface
	switch {
	case wl.Iface == "lo":
		w.c2s, w.s2c = engine.Output, engine.Output
	case wl.Host == Client:
		w.c2s, w.s2c = engine.Output, engine.Prerouting
	case wl.Host == Router:
		w.c2s, w.s2c = engine.Prerouting, engine.Prerouting
	default:
		w.c2s, w.s2c = engine.Prerouting, engine.Output
	}
	w.kind, w.flood, w.dns, w.closerC = wl.Kind, wl.SYNFlood, wl.DNS, wl.ClientCloses
	w.half = wl.RTT / 2
	w.lifetime, w.interval, w.middle = wl.Lifetime, wl.Interval, wl.MiddleboxIdleDrop
	w.unans = wl.Unanswered
	w.retries = uint8(wl.SYNRetries)
	w.cpus = uint64(max(sc.CPUs, 1))

	w.clients = wl.Clients
	w.client1 = len(wl.Clients) == 1 && wl.Clients[0].IsSingleIP()
	sum := 0.0
	for _, p := range wl.Clients {
		sum += math.Exp2(float64(min(p.Addr().BitLen()-p.Bits(), 64)))
		w.cw = append(w.cw, sum)
	}
	w.sport, w.cport = wl.ServerPorts, wl.ClientPorts
	w.nports = 1
	if w.proto.HasPorts() {
		w.nports = uint64(w.sport.Hi-w.sport.Lo) + 1
	}
	w.cspan = uint64(w.cport.Hi-w.cport.Lo) + 1
	w.srvPfx = wl.Servers
	total := 0.0
	for _, p := range wl.Servers {
		total += math.Exp2(float64(min(p.Addr().BitLen()-p.Bits(), 64)))
	}
	if total <= 4096 && total*float64(w.nports) <= 1<<20 {
		for _, p := range wl.Servers {
			for a := p.Addr(); p.Contains(a); a = a.Next() {
				w.servers = append(w.servers, a)
				if !a.Next().IsValid() {
					break
				}
			}
		}
		w.rr = uint64(len(w.servers)) * w.nports
	}
}

// randomAddr draws an address from the prefixes (weighted by their size).
func randomAddr(rng *rand.Rand, pfx []netip.Prefix, cw []float64) netip.Addr {
	p := pfx[0]
	if len(pfx) > 1 {
		x := rng.Float64() * cw[len(cw)-1]
		for i, c := range cw {
			if x < c {
				p = pfx[i]
				break
			}
		}
	}
	host := p.Addr().BitLen() - p.Bits()
	if host == 0 {
		return p.Addr()
	}
	if p.Addr().Is4() {
		b := p.Addr().As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		mask := uint32(1<<host - 1)
		if host == 32 {
			mask = math.MaxUint32
		}
		v = v&^mask | rng.Uint32()&mask
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	b := p.Addr().As16()
	for i := 15; i >= 0 && host > 0; i-- {
		m := byte(0xff)
		if host < 8 {
			m = byte(1<<host - 1)
		}
		b[i] = b[i]&^m | byte(rng.Uint32())&m
		host -= 8
	}
	return netip.AddrFrom16(b)
}

func (s *Simulator) draw(d Dist) time.Duration {
	if !d.Exponential || d.Mean <= 0 {
		return d.Mean
	}
	return time.Duration(s.rng.ExpFloat64() * float64(d.Mean))
}

// start opens a new connection of workload wi at time at and runs its
// first steps.
func (s *Simulator) start(wi int, at time.Duration) {
	w := &s.wl[wi]
	idx := s.alloc()
	c := &s.conns[idx]
	n := w.n
	w.n++
	s.started++
	*c = conn{at: at, w: uint16(wi), cpu: uint8(n % w.cpus)}
	if w.client1 {
		c.caddr = w.clients[0].Addr()
	} else {
		c.caddr = randomAddr(s.rng, w.clients, w.cw)
	}
	if w.rr > 0 {
		d := n % w.rr
		c.saddr = w.servers[d/w.nports]
		c.sport = w.sport.Lo + uint16(d%w.nports)
		// Linux's connect(): a per-destination offset, then the next port.
		k := n/w.rr + (d*0x9e3779b1)>>7
		c.cport = w.cport.Lo + uint16(k%w.cspan)
	} else {
		c.saddr = randomAddr(s.rng, w.srvPfx, nil)
		c.sport = w.sport.Lo + uint16(s.rng.Uint64N(w.nports))
		c.cport = w.cport.Lo + uint16(s.rng.Uint64N(w.cspan))
	}
	if w.flood || w.dns {
		c.cport = w.cport.Lo + uint16(s.rng.Uint64N(w.cspan))
	}
	if !w.proto.HasPorts() {
		c.sport = 0
	}
	c.cseq, c.sseq = s.rng.Uint32(), s.rng.Uint32()
	if w.unans > 0 && s.rng.Float64() < w.unans {
		c.flags |= fUnanswered
	}
	if w.proto == conntrack.TCP {
		c.phase = phSYN
	} else {
		c.phase = phQuery
	}
	if w.kind == Keepalive {
		c.end = at + 2*w.half + s.draw(w.lifetime)
	}
	s.run(idx)
}
