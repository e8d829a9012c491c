package sim

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/host"
)

// Constants of a derived scenario.
const (
	// DeriveOpenWindow is the time at the start of a derived run within
	// which the connections the table showed open are opened (and then
	// held for the whole run).
	DeriveOpenWindow = 10 * time.Second
	// deriveOpenLifetime is how long those connections stay open: longer
	// than any derived run.
	deriveOpenLifetime = 30 * day
	// A derived run lasts twice the longest time an entry of its churning
	// workloads stays in the table (so the count settles and the last tenth
	// of the run, the steady count, sees the settled table), plus the open
	// window, within these bounds.
	deriveMinDuration = time.Minute
	deriveMaxDuration = 2 * time.Hour
	// derivePortsCapped is the share of the local port range from which a
	// tuple's entries are taken to have hit the cap (analyze's
	// local-ports-exhausted fires from the same share).
	derivePortsCapped = 0.45
	// A service gets workloads of its own from this many entries; smaller
	// ones (a stray entry whose "service" is a client's port) join the
	// other-* workloads.
	deriveMinService = 10
	// Open entries become a workload from this many, or this share of
	// their part: fewer are connections in flight, which the churning
	// workload makes by itself.
	deriveMinOpen      = 10
	deriveMinOpenShare = 0.01
	// deriveMaxRate is the highest rate a workload may have (what the
	// scenario parser accepts).
	deriveMaxRate = 1e9
	// deriveDropMargin is the demand above the table's room assumed when
	// the kernel has dropped packets but no drop rate was measured.
	deriveDropMargin = 0.05
)

// Addresses of derived workloads whose real peers are not known: clients
// from the benchmarking range 198.18.0.0/15 (RFC 2544; 131,072 addresses,
// so that even a quarter of a million connections drawn at random seldom
// meet on one tuple, which would make one entry of two), the server from a
// documentation range.
var (
	deriveClients = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}
	deriveServer  = []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}
	deriveLo      = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	deriveLoNet   = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/24")}
)

// Derive builds a scenario that reproduces the table a host showed: its
// settings and, per service, the traffic that keeps that many entries in
// the table. rep (the diagnosis of the same reading) may be nil; it adds
// the counter rates (drops, early drops) and the findings. NOTRACK rules
// the host already has are not read: the traffic they exempt made no
// entries, so it is absent from the derived workloads, which leaves the
// table the same.
//
// The rates come from Little's law: in a steady state the entries in a
// state = the arrivals per second × the seconds each entry spends in it.
// For each service (protocol and destination port) among the breakdown's
// top services, split into its loopback and its other entries (in
// proportion to its loopback count):
//
//   - TCP TIME_WAIT entries / tcp_timeout_time_wait = connections closed
//     per second: a workload of short connections at that rate;
//   - TCP entries without a reply (SYN_SENT) / the time an unanswered
//     connection keeps an entry (tcp_timeout_syn_sent, 120 s by default:
//     its retransmitted SYNs, 1, 2, 4 … s apart, do not renew the timeout;
//     only those sent after it expired make a new entry) = unanswered
//     connections per second, added to the same workload as its
//     unanswered share;
//   - the other TCP entries (ESTABLISHED and the states of open
//     connections) are long-lived: their lifetime cannot be read from one
//     table, only their number, so a second workload opens that many
//     connections within the first DeriveOpenWindow and holds them open;
//   - UDP entries / udp_timeout = flows per second, one request and one
//     answer each (the unreplied share unanswered), DNS-like;
//   - ICMP entries / icmp_timeout = echo exchanges per second;
//   - SYN_RECV entries / tcp_timeout_syn_recv = handshakes per second that
//     never complete (a SYN flood).
//
// Entries of services beyond the top list go to "other" workloads, with
// the loopback entries left over; protocols the simulator does not model
// (GRE, SCTP …) are named in the description.
//
// Where Little's law cannot hold, the description says so and the rate is
// the lower bound count / time: a client that used up its local port range
// to one destination reuses the tuples of closed connections, so its
// TIME_WAIT count stops growing with the rate (the workload then uses that
// same tuple, and the simulation reaches the same cap); a table at its max
// holds fewer entries than the traffic would make. When the kernel dropped
// packets for want of room (the drop counter's rate over the report's two
// samples), the table reached its max even if the reading shows less (at
// 95% of the max, after a drop, the kernel's garbage collector evicts
// closing and unassured entries, which no counter shows): the churning
// workloads are first scaled so that their entries fill the max less the
// open entries; then, as a connection that never gets an entry loses its
// first packet and its syn_retries retransmissions, one connection per 1 +
// syn_retries dropped packets per second is added, spread over the
// churning workloads by their rates. Demand the garbage collector absorbed
// stays invisible, so the drops a derived scenario shows are a lower bound
// too. Early drops evicted unassured entries before their timeout: their
// rate is added to the workloads that make unassured entries.
//
// A listing that broke off (rep.Listing says so) is scaled up to the
// table's count; a complete one is taken as it is (the kernel's count also
// holds expired entries its garbage collector has not reaped yet).
//
// Every derivation is written, with its numbers, in the scenario's
// description.
func Derive(snap *host.Snapshot, rep *analyze.Report, bd *analyze.Breakdown) (*Scenario, error) {
	if snap == nil {
		return nil, errors.New("derive a scenario: no host was read")
	}
	if bd == nil {
		return nil, errors.New("derive a scenario: the table's entries were not listed, so there is no traffic to derive one from (listing them needs root: CAP_NET_ADMIN)")
	}
	if bd.Total <= 0 {
		return nil, errors.New("derive a scenario: the table is empty, so there is no traffic to derive one from")
	}
	d := &deriver{snap: snap, rep: rep, bd: bd}
	d.settings()
	d.services()
	d.openPools()
	d.adjust()
	sc, err := d.scenario()
	if err != nil {
		return nil, fmt.Errorf("derive a scenario: %w", err)
	}
	return sc, nil
}

// deriver holds one derivation's state.
type deriver struct {
	snap *host.Snapshot
	rep  *analyze.Report
	bd   *analyze.Breakdown

	set   map[string]int64 // the scenario's settings
	eff   map[string]int64 // with the defaults
	ports engine.PortRange // the clients' local port range
	span  float64          // its size
	scale float64          // listed entries → the table's count

	parts  []*part
	notes  []string // per-workload derivations
	limits []string // where Little's law gives only a bound, and what is left out
}

// part is one workload to derive: the entries of one service (one side of
// loopback), of the services beyond the top list, or of ICMP.
type part struct {
	name  string
	proto conntrack.Proto
	port  uint16
	loop  bool
	// Entries observed: TIME_WAIT, unreplied, held open (TCP); all of them
	// (UDP, ICMP); SYN_RECV (flood).
	tw, unrepl, open, entries float64
	flood                     bool
	clients, servers          []netip.Prefix
	role                      Role
	capped                    []analyze.TupleCount // tuples that hit the local port cap
	// Derived: new connections per second that churn (and of them the
	// unanswered ones), and what changed them.
	rate, unans float64
	why         string
}

func (d *deriver) timeout(name string) float64 {
	return float64(max(d.eff[name], 1))
}

// settings takes the host's max, buckets, timeouts and switches that the
// tracker knows.
func (d *deriver) settings() {
	s := d.snap.Settings
	d.set = map[string]int64{}
	maxv := s.Max
	if maxv <= 0 && d.rep != nil {
		maxv = d.rep.Table.Max
	}
	buckets := s.Buckets
	if buckets <= 0 {
		buckets = s.HashSize
	}
	for name, v := range map[string]int64{engine.SetMax: maxv, engine.SetBuckets: buckets} {
		if v <= 0 {
			continue // unknown: the default
		}
		if _, val, err := engine.ParseSetting(fmt.Sprintf("%s=%d", name, v)); err == nil {
			d.set[name] = val
		} else {
			d.limits = append(d.limits, fmt.Sprintf("%s: left at the default", err))
		}
	}
	for _, m := range []map[string]int64{s.Timeouts, s.Switches} {
		for k, v := range m {
			name, val, err := engine.ParseSetting(fmt.Sprintf("nf_conntrack_%s=%d", k, v))
			if err == nil {
				d.set[name] = val
			}
		}
	}
	d.eff = engine.DefaultSettings()
	for k, v := range d.set {
		d.eff[k] = v
		if v == engine.DefaultSettings()[k] && k != engine.SetMax && k != engine.SetBuckets {
			delete(d.set, k) // the kernel's default: the scenario says so by leaving it out
		}
	}
	d.ports = engine.PortRange{Lo: DefaultClientPortLo, Hi: DefaultClientPortHi}
	if t := d.snap.TCP; t.PortRangeLow > 0 && t.PortRangeHigh >= t.PortRangeLow && t.PortRangeHigh <= 65535 {
		d.ports = engine.PortRange{Lo: uint16(t.PortRangeLow), Hi: uint16(t.PortRangeHigh)}
	}
	d.span = float64(d.ports.Hi-d.ports.Lo) + 1
	// A listing cut short: scale its counts up to the table's count. (A
	// complete listing is taken as it is: the kernel's count also holds
	// entries that expired and wait for its garbage collector, which a
	// listing leaves out, so the two differ on a busy table.)
	d.scale = 1
	if c := s.Count; d.rep != nil && d.rep.Listing != nil && d.rep.Listing.Reason == analyze.ListingFailed && c > d.bd.Total {
		d.scale = float64(c) / float64(d.bd.Total)
		d.limits = append(d.limits, fmt.Sprintf("the listing broke off after %s of the table's %s entries: every count is scaled by %.3g",
			Thousands(d.bd.Total), Thousands(c), d.scale))
	}
}

// synSentResidence is how long the entries of one unanswered connection
// stay in the table: its SYNs go out at 0, 1, 3, 7 … 2^retries − 1 s
// (Linux's doubling backoff from 1 s; the simulator's too); a
// retransmitted SYN does not renew the entry's timeout (the tracker's
// rule, or a client could keep an entry forever), so the entry lives
// tcp_timeout_syn_sent from the first SYN, and only a SYN sent after it
// expired makes a new one.
func synSentResidence(timeout float64, retries int) float64 {
	res, expiry := 0.0, math.Inf(-1)
	for i := 0; i <= retries; i++ {
		if t := math.Exp2(float64(i)) - 1; t >= expiry {
			expiry = t + timeout
			res += timeout
		}
	}
	return res
}

// services splits the breakdown into workloads to derive.
func (d *deriver) services() {
	b := d.bd
	var sumTCP, sumTCPTW, sumTCPUnrepl, sumUDP, sumUDPUnrepl, sumLoop float64
	taken := map[uint16]bool{}
	// TCP entries without a reply are taken as unanswered SYNs only up to
	// the table's SYN_SENT count: an entry picked up mid-stream, or loaded
	// with conntrack -I, is ESTABLISHED without a reply, and counts as open.
	synShare := 1.0
	if u := float64(b.Unreplied["tcp"]); u > 0 {
		synShare = math.Min(1, float64(b.TCPState["SYN_SENT"])/u)
	}
	for _, s := range b.TopServices {
		proto, ok := conntrack.ProtoByName(s.Proto)
		if !ok || proto != conntrack.TCP && proto != conntrack.UDP {
			continue // other protocols are named as not modelled, from L4
		}
		if s.Count < deriveMinService {
			continue // a handful of entries: left to the other-* workloads
		}
		c, l, tw, u := float64(s.Count), float64(s.Loopback), float64(s.TimeWait), float64(s.Unreplied)
		sumLoop += l
		if proto == conntrack.TCP {
			sumTCP, sumTCPTW, sumTCPUnrepl = sumTCP+c, sumTCPTW+tw, sumTCPUnrepl+u
		} else {
			sumUDP, sumUDPUnrepl = sumUDP+c, sumUDPUnrepl+u
		}
		taken[s.Port] = true
		if proto == conntrack.TCP {
			u *= synShare
		}
		d.split(fmt.Sprintf("%s-%d", s.Proto, s.Port), proto, s.Port, c, l, tw, u)
	}
	// The services beyond the top list, on a port none of the top ones uses.
	other := uint16(10000)
	for taken[other] {
		other++
	}
	loopLeft := math.Max(0, float64(b.Loopback)-sumLoop)
	take := func(n float64) float64 {
		l := math.Min(loopLeft, n)
		loopLeft -= l
		return l
	}
	if c := float64(b.L4["tcp"]) - sumTCP; c >= 0.5 {
		tw := math.Max(0, float64(b.TCPState["TIME_WAIT"])-sumTCPTW)
		u := math.Max(0, float64(b.Unreplied["tcp"])-sumTCPUnrepl) * synShare
		d.split("other-tcp", conntrack.TCP, other, c, take(c), math.Min(tw, c), math.Min(u, c))
	}
	if c := float64(b.L4["udp"]) - sumUDP; c >= 0.5 {
		u := math.Max(0, float64(b.Unreplied["udp"])-sumUDPUnrepl)
		d.split("other-udp", conntrack.UDP, other, c, take(c), 0, math.Min(u, c))
	}
	if c := float64(b.L4["icmp"] + b.L4["icmpv6"]); c >= 0.5 {
		u := float64(b.Unreplied["icmp"] + b.Unreplied["icmpv6"])
		d.split("icmp", conntrack.ICMP, 0, c, take(c), 0, math.Min(u, c))
	}
	// Half-open handshakes: replied, so counted among the open entries
	// above; taken out of them into a flood workload.
	if n := float64(b.TCPState["SYN_RECV"]) * d.scale; n >= 0.5 {
		var open float64
		var busiest *part
		for _, p := range d.parts {
			open += p.open
			if p.proto == conntrack.TCP && !p.loop && (busiest == nil || p.open > busiest.open) {
				busiest = p
			}
		}
		if open > 0 {
			f := math.Max(0, open-n) / open
			for _, p := range d.parts {
				p.open *= f
			}
		}
		port := uint16(443)
		if busiest != nil {
			port = busiest.port
		}
		d.parts = append(d.parts, &part{name: fmt.Sprintf("tcp-%d-half-open", port), proto: conntrack.TCP, port: port,
			flood: true, entries: n, clients: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, servers: deriveServer})
	}
	var unmodelled []string
	for _, k := range sortedKeys(b.L4) {
		switch k {
		case "tcp", "udp", "icmp", "icmpv6":
		default:
			unmodelled = append(unmodelled, fmt.Sprintf("%s %s", Thousands(b.L4[k]), k))
		}
	}
	if len(unmodelled) > 0 {
		d.limits = append(d.limits, "not modelled (the simulator has no workload for them): "+strings.Join(unmodelled, ", ")+" entries")
	}
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// split adds the loopback and the other part of one service: c entries,
// l of them on loopback, tw in TIME_WAIT, u without a reply (the states
// split in proportion).
func (d *deriver) split(name string, proto conntrack.Proto, port uint16, c, l, tw, u float64) {
	// Counts as a snapshot says them, kept consistent: none negative,
	// no part larger than the whole.
	c = math.Max(0, c) * d.scale
	l = math.Min(math.Max(0, l)*d.scale, c)
	tw = math.Min(math.Max(0, tw)*d.scale, c)
	u = math.Min(math.Max(0, u)*d.scale, c-tw)
	if c <= 0 {
		return
	}
	for _, loop := range []bool{true, false} {
		f := l / c
		if !loop {
			f = 1 - f
		}
		if f*c < 0.5 {
			continue
		}
		p := &part{name: name, proto: proto, port: port, loop: loop, entries: f * c, unrepl: f * u}
		if loop {
			p.name += "-lo"
		}
		if proto == conntrack.TCP {
			p.tw, p.open = f*tw, math.Max(0, f*(c-tw-u))
		}
		d.addresses(p)
		d.parts = append(d.parts, p)
	}
}

// addresses picks a part's clients and servers: the tuples the breakdown
// counted for its port when they hold its entries (exactly those that hit
// the local port cap), else loopback or documentation addresses.
func (d *deriver) addresses(p *part) {
	p.role = Server
	if p.proto == conntrack.ICMP {
		p.clients, p.servers = deriveClients, deriveServer
		if p.loop {
			p.clients, p.servers = deriveLo, deriveLo
		}
		return
	}
	var tuples []analyze.TupleCount
	var held float64
	if p.proto == conntrack.TCP && !strings.HasPrefix(p.name, "other-") {
		for _, t := range d.bd.TopTuples {
			src, err1 := netip.ParseAddr(t.Src)
			dst, err2 := netip.ParseAddr(t.Dst)
			if t.Port != p.port || err1 != nil || err2 != nil || (src.IsLoopback() || dst.IsLoopback()) != p.loop {
				continue
			}
			if len(tuples) > 0 && src.Is4() != netip.MustParseAddr(tuples[0].Src).Is4() {
				continue
			}
			tuples = append(tuples, t)
			held += float64(t.Count) * d.scale
			if float64(t.Count) >= derivePortsCapped*d.span && float64(t.Count) <= d.span*1.01 {
				p.capped = append(p.capped, t)
			}
		}
	}
	if len(p.capped) > 0 || len(tuples) > 0 && held >= 0.9*p.entries {
		if len(p.capped) > 0 {
			tuples = p.capped
		}
		for _, t := range tuples {
			src, dst := netip.MustParseAddr(t.Src), netip.MustParseAddr(t.Dst)
			if s := netip.PrefixFrom(src, src.BitLen()); !slices.Contains(p.clients, s) {
				p.clients = append(p.clients, s)
			}
			if s := netip.PrefixFrom(dst, dst.BitLen()); !slices.Contains(p.servers, s) {
				p.servers = append(p.servers, s)
			}
		}
		if !p.loop && len(p.capped) > 0 {
			p.role = Client // one address running out of local ports: this host's connections, most likely
		}
		return
	}
	switch {
	case p.loop && p.entries <= 0.9*d.span:
		p.clients, p.servers = deriveLo, deriveLo
	case p.loop:
		// More entries than one client address has local ports for.
		p.clients, p.servers = deriveLoNet, deriveLo
	default:
		p.clients, p.servers = deriveClients, deriveServer
	}
}

// openPools settles the open connections to simulate: a few in a part
// are connections in flight, which its churning workload makes by
// itself; and as the open connections arrive at random moments (Poisson
// arrivals, like every workload's), their number varies by about its
// square root, so when that could fill the table on its own they are
// opened three standard deviations short of the max.
func (d *deriver) openPools() {
	var open float64
	for _, p := range d.parts {
		if p.open < deriveMinOpen && p.open < deriveMinOpenShare*p.entries {
			p.open = 0
		}
		open += p.open
	}
	maxv := float64(d.set[engine.SetMax])
	if sd := math.Sqrt(open); maxv <= 0 || open+3*sd <= maxv {
		return
	}
	f := math.Max(0, maxv-3*math.Sqrt(open)) / open
	for _, p := range d.parts {
		p.open *= f
	}
	d.limits = append(d.limits, fmt.Sprintf("the %s open entries nearly fill the table: opened at random moments, their number varies by about its square root (%s), so %s of them are opened, three standard deviations short of the max, lest they fill it on their own",
		count(open), count(math.Sqrt(open)), count(open*f)))
}

// adjust turns the counts into rates (Little's law), then adds the demand
// that the kernel's drop and early-drop rates show.
func (d *deriver) adjust() {
	tw := d.timeout(engine.SetTCPTimeoutTimeWait)
	retries := DefaultSYNRetries
	ss := synSentResidence(d.timeout(engine.SetTCPTimeoutSynSent), retries)
	udp, icmp, synRecv := d.timeout(engine.SetUDPTimeout), d.timeout(engine.SetICMPTimeout), d.timeout(engine.SetTCPTimeoutSynRecv)
	for _, p := range d.parts {
		switch {
		case p.flood:
			p.rate = p.entries / synRecv
			p.why = fmt.Sprintf("%s SYN_RECV ÷ %s s (tcp_timeout_syn_recv) = %s/s handshakes that never complete (a SYN flood, or lost ACKs)",
				count(p.entries), num(synRecv), num(p.rate))
		case p.proto == conntrack.TCP:
			p.unans = p.unrepl / ss
			p.rate = p.tw/tw + p.unans
			var why []string
			if p.tw > 0 {
				why = append(why, fmt.Sprintf("%s TIME_WAIT ÷ %s s (tcp_timeout_time_wait) = %s closed connections/s", count(p.tw), num(tw), num(p.tw/tw)))
			}
			if p.unrepl > 0 {
				how := "tcp_timeout_syn_sent: retransmitted SYNs do not renew it"
				if ss > d.timeout(engine.SetTCPTimeoutSynSent) {
					how = fmt.Sprintf("the SYN's %d retransmissions over %s s outlive tcp_timeout_syn_sent, making new entries", retries, num(math.Exp2(float64(retries))-1))
				}
				why = append(why, fmt.Sprintf("%s unreplied (SYN_SENT) ÷ %s s (%s) = %s unanswered/s",
					count(p.unrepl), num(ss), how, num(p.unans)))
			}
			p.why = strings.Join(why, "; ")
		case p.proto == conntrack.UDP:
			p.rate, p.unans = p.entries/udp, p.unrepl/udp
			p.why = fmt.Sprintf("%s entries ÷ %s s (udp_timeout) = %s flows/s of one request and one answer", count(p.entries), num(udp), num(p.rate))
		default:
			p.rate, p.unans = p.entries/icmp, p.unrepl/icmp
			p.why = fmt.Sprintf("%s entries ÷ %s s (icmp_timeout) = %s echo exchanges/s", count(p.entries), num(icmp), num(p.rate))
		}
		if p.proto != conntrack.TCP && p.unrepl > 0 {
			p.why += fmt.Sprintf(", %s unanswered", percent(p.unrepl/p.entries))
		}
	}
	see := ""
	if d.rep != nil && slices.ContainsFunc(d.rep.Findings, func(f analyze.Finding) bool { return f.ID == "local-ports-exhausted" }) {
		see = " (local-ports-exhausted)"
	}
	for _, p := range d.parts {
		for _, t := range p.capped {
			d.limits = append(d.limits, fmt.Sprintf("%s → %s:%d holds %s entries (%s TIME_WAIT) for %s local ports: it has run out of local ports%s, so new connections reuse the tuples of closed ones and its TIME_WAIT count no longer grows with the rate — the rate of %s is a lower bound, and the simulation, on the same tuple, reaches the same cap",
				t.Src, t.Dst, t.Port, Thousands(t.Count), Thousands(t.TimeWait), Thousands(int64(d.span)), see, p.name))
		}
	}
	if d.rep == nil {
		return
	}
	ps := map[string]float64{}
	for k, v := range d.rep.Stats.PerSecond {
		if v > 0 && !math.IsInf(v, 0) { // (NaN is not > 0)
			ps[k] = v
		}
	}
	// Early drops evicted unassured entries before their timeout: add
	// their rate to the workloads that make such entries.
	if ed := ps[conntrack.StatEarlyDrop.String()]; ed > 0 {
		var un float64
		for _, p := range d.parts {
			un += unassured(p)
		}
		if un > 0 {
			for _, p := range d.parts {
				add := ed * unassured(p) / un
				if add <= 0 {
					continue
				}
				p.rate += add
				if p.proto == conntrack.TCP && !p.flood {
					p.unans += add
				} else if p.entries > 0 {
					p.unans += add * p.unrepl / p.entries
				}
				p.why += fmt.Sprintf("; + %s/s evicted by early drop before their timeout", num(add))
			}
			d.limits = append(d.limits, fmt.Sprintf("early drop evicted %s unassured entries/s before their timeout; their rate is added to the workloads that make unassured entries", num(ed)))
		}
	}
	var churn float64
	for _, p := range d.parts {
		churn += p.rate
	}
	drop := ps[conntrack.StatDrop.String()]
	tab := d.rep.Table
	full := tab.Max > 0 && float64(tab.Count) >= 0.98*float64(tab.Max)
	// At 95% of the max, after a drop, the kernel's garbage collector
	// evicts closing and unassured entries (no counter shows it), so a
	// table that drops can read from there up.
	nearFull := tab.Max > 0 && float64(tab.Count) >= 0.95*float64(tab.Max)
	switch {
	case drop > 0 && churn > 0:
		// The table reached its max: first what its churning entries
		// would be with the room the open ones leave, then the demand it
		// refused.
		fill := d.fill()
		extra := drop / float64(1+retries)
		k := fill * (churn + extra) / churn
		d.scaleChurn(k)
		filled := " A"
		if fill > 1 {
			filled = fmt.Sprintf(" The table reached its max to drop, though the reading shows %s entries (at 95%% of the max, after a drop, the kernel's garbage collector evicts closing and unassured entries, which no counter shows): the churning workloads are scaled by %.3g to fill the %s entries the open ones leave (with three standard deviations of their number to spare); a",
				Thousands(d.bd.Total), fill, count(d.fillRoom()))
		}
		d.limits = append(d.limits, fmt.Sprintf("the kernel dropped %s packets/s for want of room%s, so the counts show what the table admitted, not the demand: the rates are lower bounds.%s connection that never gets an entry loses its first packet and %d retransmissions, so %s ÷ %d = %s connections/s more are added, spread over the workloads by their rates (× %.3g in all). Demand the garbage collector absorbed cannot be seen: the drops predicted are a lower bound too",
			num(drop), atMax(d.rep, full), filled, retries, num(drop), 1+retries, num(extra), k))
	case nearFull && d.rep.Stats.Drop > 0 && churn > 0:
		// Drops in the past, none measured now (a burst that is over, or
		// one counter sample): the demand exceeded the table at times, by
		// how much the reading cannot tell.
		k := d.fill() * (1 + deriveDropMargin)
		d.scaleChurn(k)
		when := fmt.Sprintf("none in the %s s between the two counter samples", num(d.rep.Stats.Interval))
		if d.rep.Stats.Interval == 0 {
			when = "with one counter sample there is no rate"
		}
		d.limits = append(d.limits, fmt.Sprintf("the table is at %s of its max (%s entries) and the kernel has dropped %s packets for want of room (%s): the demand exceeded the table at least at times, by how much the reading cannot tell, so the churning workloads are scaled by %.3g, to fill the %s entries the open ones leave (with three standard deviations of their number to spare) and %.0f%% more",
			percent(tab.Usage), Thousands(tab.Max), Thousands(int64(d.rep.Stats.Drop)), when, k, count(d.fillRoom()), deriveDropMargin*100))
	case full:
		d.limits = append(d.limits, fmt.Sprintf("the table is at its max (%s entries) but the kernel has dropped nothing: the counts are taken as the demand",
			Thousands(tab.Max)))
	}
}

// room is the entries the churning workloads can hold: the max less the
// open entries.
func (d *deriver) room() float64 {
	var open float64
	for _, p := range d.parts {
		open += p.open
	}
	return float64(d.set[engine.SetMax]) - open
}

// fillRoom is the room the churning workloads are scaled to fill: the
// max less the open entries, with three standard deviations of their
// number to spare.
func (d *deriver) fillRoom() float64 {
	var open float64
	for _, p := range d.parts {
		open += p.open
	}
	return d.room() + 3*math.Sqrt(open)
}

// fill is the factor that makes the churning workloads' entries fill the
// room (1 if they already do, or the max is unknown) — the room even when
// three standard deviations fewer open connections arrive than expected
// (their number varies by its square root), so that a table that dropped
// fills in the simulation too.
func (d *deriver) fill() float64 {
	var held float64
	for _, p := range d.parts {
		held += churning(p)
	}
	if room := d.fillRoom(); d.set[engine.SetMax] > 0 && held > 0 && room > held {
		return room / held
	}
	return 1
}

// scaleChurn multiplies the churning workloads' rates.
func (d *deriver) scaleChurn(k float64) {
	for _, p := range d.parts {
		p.rate *= k
		p.unans *= k
		p.why += fmt.Sprintf("; × %.3g for the drops", k)
	}
}

func atMax(rep *analyze.Report, full bool) string {
	if full {
		return fmt.Sprintf(" (the table at its max, %s entries)", Thousands(rep.Table.Max))
	}
	return ""
}

// unassured estimates a part's entries early drop can evict: SYN_SENT and
// SYN_RECV entries, and the UDP and ICMP ones (one answer does not make
// them ASSURED).
func unassured(p *part) float64 {
	switch {
	case p.flood:
		return p.entries
	case p.proto == conntrack.TCP:
		return p.unrepl
	}
	return p.entries
}

// churning are the entries of a part that its churning workload makes.
func churning(p *part) float64 {
	if p.proto == conntrack.TCP && !p.flood {
		return p.tw + p.unrepl
	}
	return p.entries
}

// count formats an entry count (whole numbers with separators).
func count(v float64) string { return Thousands(int64(math.Round(v))) }

// num formats a rate or a time with 4 significant digits.
func num(v float64) string { return strconv.FormatFloat(sig4(v), 'f', -1, 64) }

// sig4 rounds to 4 significant digits (the nearest float to them).
func sig4(v float64) float64 {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 4, 64), 64)
	return r
}

var nameChars = regexp.MustCompile(`[^a-z0-9]+`)

// scenario assembles the workloads, the run's duration and the description.
func (d *deriver) scenario() (*Scenario, error) {
	hostName := d.snap.Hostname
	if hostName == "" {
		hostName = "host"
	}
	ns := d.snap.NetNS.Name
	if d.snap.NetNS.Init || ns == "" {
		ns = "init"
	}
	name := strings.Trim(nameChars.ReplaceAllString(strings.ToLower("derived-"+hostName+"-"+ns), "-"), "-")
	sc := &Scenario{Name: name, Seed: 1, CPUs: min(max(d.snap.CPUs, 1), 1024), Settings: d.set}
	var longest float64 // the longest time a churning entry stays in the table
	tw := d.timeout(engine.SetTCPTimeoutTimeWait)
	ss := synSentResidence(d.timeout(engine.SetTCPTimeoutSynSent), DefaultSYNRetries)
	for _, p := range d.parts {
		w := Workload{Name: p.name, Proto: p.proto, Clients: p.clients, Servers: p.servers, Host: p.role,
			ClientPorts: d.ports, SYNRetries: DefaultSYNRetries, Iface: DefaultIface}
		if p.proto != conntrack.ICMP {
			w.ServerPorts = engine.PortRange{Lo: p.port, Hi: p.port}
		}
		if p.loop {
			w.Iface = "lo"
		} else if p.proto == conntrack.TCP {
			w.RTT = 20 * time.Millisecond
		}
		if rate := sig4(p.rate); rate > deriveMaxRate || sig4(p.open/DeriveOpenWindow.Seconds()) > deriveMaxRate {
			return nil, fmt.Errorf("%s: %s new connections per second, more than the simulator takes (%s): these are not a real table's counts",
				p.name, num(math.Max(rate, p.open/DeriveOpenWindow.Seconds())), fmtRate(deriveMaxRate))
		} else if rate > 0 {
			cw := w
			cw.Rate = Rate{Kind: Constant, Value: rate}
			switch {
			case p.flood:
				cw.SYNFlood = true
				longest = math.Max(longest, d.timeout(engine.SetTCPTimeoutSynRecv))
			case p.proto == conntrack.TCP:
				cw.Kind, cw.ClientCloses = Short, false
				cw.Lifetime = Dist{Mean: 50 * time.Millisecond, Exponential: true}
				if p.loop {
					cw.Lifetime.Mean = 5 * time.Millisecond
				}
				cw.Unanswered = math.Min(1, sig4(p.unans/p.rate))
				if p.tw > 0 {
					longest = math.Max(longest, tw)
				}
				if cw.Unanswered > 0 {
					longest = math.Max(longest, ss)
				}
			case p.proto == conntrack.UDP:
				cw.DNS = true
				cw.Lifetime = Dist{Mean: time.Millisecond}
				cw.Unanswered = math.Min(1, sig4(p.unans/p.rate))
				longest = math.Max(longest, d.timeout(engine.SetUDPTimeout))
			default:
				cw.Lifetime = Dist{Mean: time.Millisecond}
				cw.Unanswered = math.Min(1, sig4(p.unans/p.rate))
				longest = math.Max(longest, d.timeout(engine.SetICMPTimeout))
			}
			sc.Workloads = append(sc.Workloads, cw)
			d.notes = append(d.notes, p.name+": "+p.why)
		}
		if rate := sig4(p.open / DeriveOpenWindow.Seconds()); p.proto == conntrack.TCP && rate > 0 {
			ow := w
			ow.Name += "-open"
			ow.Rate = Rate{Kind: Constant, Value: rate}
			ow.Stop = DeriveOpenWindow
			ow.Kind, ow.ClientCloses = Keepalive, true
			ow.Lifetime = Dist{Mean: deriveOpenLifetime}
			// A request now and then keeps each entry's timeout fresh.
			ow.Interval = Dist{Mean: time.Duration(min(600, max(1, d.eff[engine.SetTCPTimeoutEstablished]/2))) * time.Second}
			sc.Workloads = append(sc.Workloads, ow)
			d.notes = append(d.notes, fmt.Sprintf("%s: %s entries of open connections (ESTABLISHED and the other states before the close), opened within the first %s and held open for the run: their lifetime cannot be read from one table, only their number",
				ow.Name, count(p.open), DeriveOpenWindow))
		}
	}
	if len(sc.Workloads) == 0 {
		return nil, errors.New("no workload has a positive rate")
	}
	dur := time.Duration(2*longest*float64(time.Second)) + DeriveOpenWindow
	dur = ((dur + 10*time.Second - 1) / (10 * time.Second)) * (10 * time.Second)
	switch {
	case dur < deriveMinDuration:
		dur = deriveMinDuration
	case dur > deriveMaxDuration:
		dur = deriveMaxDuration
		d.limits = append(d.limits, fmt.Sprintf("the run is capped at %s, less than twice the longest timeout (%s s): the count may still be rising at its end",
			deriveMaxDuration, num(longest)))
	}
	sc.Duration = dur
	sc.Description = d.describe(dur)
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	return sc, nil
}

func (d *deriver) describe(dur time.Duration) string {
	s := d.snap
	where := s.Hostname
	if where == "" {
		where = "the host"
	}
	if !s.NetNS.Init && s.NetNS.Name != "" && s.NetNS.Name != "init" {
		where += " (network namespace " + s.NetNS.Name + ")"
	}
	at := ""
	if !s.TakenAt.IsZero() {
		at = " at " + s.TakenAt.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	of := ""
	if m := d.set[engine.SetMax]; m > 0 {
		of = fmt.Sprintf(" of a max of %s", Thousands(m))
	}
	lines := []string{
		fmt.Sprintf("derived from the table of %s as read%s: %s entries%s.", where, at, Thousands(d.bd.Total), of),
		"Each workload's rate is Little's law, entries = new connections per second × seconds each entry stays in the table:",
	}
	for _, n := range d.notes {
		lines = append(lines, n+".")
	}
	for _, l := range d.limits {
		lines = append(lines, "Note: "+l+".")
	}
	lines = append(lines, fmt.Sprintf("The run lasts %s: at least twice the longest time a churning entry stays in the table, plus the opening window, so that its last tenth shows the settled count.", dur))
	return strings.Join(lines, "\n")
}

// YAML writes the scenario in the format [ParseScenario] reads, which
// reads it back to the same scenario (once validated: defaults are written
// out). A NOTRACK rule pair that differs only in its hook (prerouting,
// then output) is written once, without a hook, as the parser reads it.
func (s *Scenario) YAML() []byte {
	doc := mapping()
	add(doc, "name", str(s.Name))
	if s.Description != "" {
		add(doc, "description", str(s.Description))
	}
	add(doc, "duration", str(fmtDuration(s.Duration)))
	if s.Step > 0 {
		add(doc, "step", str(fmtDuration(s.Step)))
	}
	add(doc, "seed", number(strconv.FormatUint(s.Seed, 10)))
	if s.CPUs > 0 {
		add(doc, "cpus", number(strconv.Itoa(s.CPUs)))
	}
	if len(s.Settings) > 0 {
		set := mapping()
		keys := make([]string, 0, len(s.Settings))
		for k := range s.Settings {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int {
			rank := func(k string) int {
				switch k {
				case engine.SetMax:
					return 0
				case engine.SetBuckets:
					return 1
				}
				return 2
			}
			if ra, rb := rank(a), rank(b); ra != rb {
				return ra - rb
			}
			return strings.Compare(a, b)
		})
		for _, k := range keys {
			add(set, k, number(strconv.FormatInt(s.Settings[k], 10)))
		}
		add(doc, "settings", set)
	}
	if len(s.NoTrack) > 0 {
		list := sequence()
		for i := 0; i < len(s.NoTrack); i++ {
			r := s.NoTrack[i]
			both := false
			if r.Hook == engine.Prerouting && i+1 < len(s.NoTrack) {
				next := s.NoTrack[i+1]
				next.Hook = engine.Prerouting
				both = s.NoTrack[i+1].Hook == engine.Output && next == r
			}
			list.Content = append(list.Content, notrackNode(r, both))
			if both {
				i++
			}
		}
		add(doc, "notrack", list)
	}
	wl := sequence()
	for i := range s.Workloads {
		wl.Content = append(wl.Content, workloadNode(&s.Workloads[i]))
	}
	add(doc, "workloads", wl)
	out, err := yaml.Marshal(doc)
	if err != nil { // a tree of plain scalars always encodes
		panic(fmt.Sprintf("sim: encode scenario %s: %v", s.Name, err))
	}
	return out
}

func notrackNode(r engine.NoTrackRule, both bool) *yaml.Node {
	n := mapping()
	n.Style = yaml.FlowStyle
	if !both {
		hook := "prerouting"
		if r.Hook == engine.Output {
			hook = "output"
		}
		add(n, "hook", str(hook))
	}
	if r.Iface != "" {
		add(n, "iface", str(r.Iface))
	}
	if r.Proto != 0 {
		add(n, "proto", str(r.Proto.String()))
	}
	if r.Src.IsValid() {
		add(n, "src", str(prefixString(r.Src)))
	}
	if r.Dst.IsValid() {
		add(n, "dst", str(prefixString(r.Dst)))
	}
	if r.SPort != (engine.PortRange{}) {
		add(n, "sport", portsNode(r.SPort))
	}
	if r.DPort != (engine.PortRange{}) {
		add(n, "dport", portsNode(r.DPort))
	}
	return n
}

func workloadNode(w *Workload) *yaml.Node {
	n := mapping()
	add(n, "name", str(w.Name))
	add(n, "proto", str(w.Proto.String()))
	if w.Proto == conntrack.TCP && !w.SYNFlood {
		add(n, "kind", str(w.Kind.String()))
	}
	if w.SYNFlood {
		add(n, "syn_flood", scalar("!!bool", "true"))
	}
	if w.DNS {
		add(n, "dns", scalar("!!bool", "true"))
	}
	add(n, "rate", rateNode(w.Rate))
	if w.Start > 0 {
		add(n, "start", str(fmtDuration(w.Start)))
	}
	if w.Stop > 0 {
		add(n, "stop", str(fmtDuration(w.Stop)))
	}
	add(n, "client", prefixesNode(w.Clients))
	add(n, "server", prefixesNode(w.Servers))
	if w.ServerPorts != (engine.PortRange{}) && w.Proto != conntrack.ICMP {
		add(n, "server_port", portsNode(w.ServerPorts))
	}
	if w.ClientPorts != (engine.PortRange{}) && w.ClientPorts != (engine.PortRange{Lo: DefaultClientPortLo, Hi: DefaultClientPortHi}) {
		add(n, "client_ports", portsNode(w.ClientPorts))
	}
	if w.Iface != "" {
		add(n, "iface", str(w.Iface))
	}
	add(n, "host", str(w.Host.String()))
	add(n, "lifetime", distNode(w.Lifetime))
	if w.Kind == Keepalive && w.Interval.Mean > 0 {
		add(n, "interval", distNode(w.Interval))
	}
	if w.RTT > 0 {
		add(n, "rtt", str(fmtDuration(w.RTT)))
	}
	closer := "server"
	if w.ClientCloses {
		closer = "client"
	}
	add(n, "closer", str(closer))
	if w.Unanswered > 0 {
		add(n, "unanswered", number(strconv.FormatFloat(w.Unanswered, 'f', -1, 64)))
	}
	if w.MiddleboxIdleDrop > 0 {
		add(n, "middlebox_idle_drop", str(fmtDuration(w.MiddleboxIdleDrop)))
	}
	if w.SYNRetries != DefaultSYNRetries {
		add(n, "syn_retries", number(strconv.Itoa(w.SYNRetries)))
	}
	return n
}

func rateNode(r Rate) *yaml.Node {
	f := func(v float64) *yaml.Node { return number(strconv.FormatFloat(v, 'f', -1, 64)) }
	switch r.Kind {
	case Ramp:
		n := mapping()
		n.Style = yaml.FlowStyle
		add(n, "from", f(r.From))
		add(n, "to", f(r.To))
		return n
	case Daily:
		n := mapping()
		n.Style = yaml.FlowStyle
		add(n, "peak", f(r.Peak))
		add(n, "trough", f(r.Trough))
		at := fmtDuration(r.PeakAt)
		if r.PeakAt%time.Second == 0 {
			at = clockTime(r.PeakAt)
		}
		add(n, "peak_at", str(at))
		return n
	}
	return f(r.Value)
}

func distNode(d Dist) *yaml.Node {
	if !d.Exponential {
		return str(fmtDuration(d.Mean))
	}
	n := mapping()
	n.Style = yaml.FlowStyle
	add(n, "exponential", str(fmtDuration(d.Mean)))
	return n
}

func prefixesNode(ps []netip.Prefix) *yaml.Node {
	if len(ps) == 1 {
		return str(prefixString(ps[0]))
	}
	n := sequence()
	n.Style = yaml.FlowStyle
	for _, p := range ps {
		n.Content = append(n.Content, str(prefixString(p)))
	}
	return n
}

func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// fmtDuration writes a duration as ParseDuration reads it: whole days as
// "2d", else Go's form with "us" for microseconds.
func fmtDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d%day == 0:
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return strings.ReplaceAll(d.String(), "µs", "us")
}

func mapping() *yaml.Node  { return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"} }
func sequence() *yaml.Node { return &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"} }

func scalar(tag, v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: v} }

// number is a number scalar, written plain ("460", "0.25").
func number(v string) *yaml.Node {
	if _, err := strconv.ParseInt(v, 10, 64); err == nil {
		return scalar("!!int", v)
	}
	return scalar("!!float", v)
}

// portsNode is a port ("8080") or a range ("8080-8083").
func portsNode(r engine.PortRange) *yaml.Node {
	if r.Hi <= r.Lo {
		return number(strconv.Itoa(int(r.Lo)))
	}
	return str(portsString(r))
}

// str is a string scalar: the encoder quotes it when a plain one would
// read as something else ("0", "true", "::1").
func str(v string) *yaml.Node { return scalar("!!str", v) }

func add(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, str(key), v)
}
