package engine_test

// The differential harness: a scenario's packets are injected into a
// kernel lab (internal/kernlab: client namespace -> tracking router ->
// server namespace) one at a time; after each packet the kernel's ctinfo
// (R's per-ctinfo counters) and table (ctnetlink dump in R) are recorded
// with the time R processed the packet (the kernel's receive timestamp of
// the forwarded frame) and the time the table was read. The same packets
// are then replayed into an engine.Tracker, configured with R's settings,
// whose VirtualClock is set to those times, and every step is compared:
// ctinfo, drop, the set of entries, and per entry the state, [UNREPLIED],
// [ASSURED] and the seconds left (±1 s). The kernel is the reference.

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/internal/kernlab"
)

const (
	cli = kernlab.Client
	srv = kernlab.Server
)

// step is one packet of a scenario. The harness derives addresses, ports,
// sequence and acknowledgement numbers.
type step struct {
	From kernlab.Side
	// Flags are the TCP flags, one letter each: S SYN, A ACK, F FIN, R RST,
	// P PSH, U URG, E ECE, C CWR; "" is a segment without flags.
	Flags string
	Len   int           // payload bytes
	Wait  time.Duration // sleep before sending (real time: the kernel's clock runs)
	// Retx resends this side's previous segment of the connection (same
	// seq and ack).
	Retx bool
	// NewISN starts a new incarnation of the connection: this side (and
	// later the peer) pick fresh initial sequence numbers.
	NewISN bool
	// Behind acknowledges this many sequence numbers less than the peer
	// has sent (a segment crossing the peer's last one).
	Behind int
	// Stale sends the packet in the previous incarnation's sequence space
	// (the one NewISN replaced): a peer that has not noticed the restart.
	Stale bool
	// Unreach sends an ICMP error (port unreachable unless Type says
	// otherwise) quoting the peer's packet of the connection, instead of a
	// packet of the scenario's protocol.
	Unreach bool
	// Type overrides the ICMP type: of an ICMP scenario's packet (by
	// default an echo request from the client, an echo reply from the
	// server; type 0 is written -2) or of an Unreach error (with Code).
	Type, Code int
	// Router sends an Unreach error from a router on the sender's side
	// instead of the end host.
	Router bool
	// ZeroWin advertises a zero window (TCP).
	ZeroWin bool
	// Idle sends nothing: the step waits (Wait) and compares the tables,
	// so the seconds left are checked after time has passed.
	Idle bool
	// Conn selects the connection (client port 40000+Conn, ICMP id
	// 0x4000+Conn); 0 is the scenario's main connection.
	Conn int
	Note string
}

// scenario is a table of steps on one protocol and family.
type scenario struct {
	Name string
	// Proto is TCP, UDP, ICMP (ICMPv6 when V6) or any protocol without
	// ports (packets carry Len zero bytes).
	Proto conntrack.Proto
	V6    bool
	Steps []step
	// Port is the server's port (default 80 for TCP, 53 for UDP).
	Port uint16
	// NoTrack are raw-table rules: the lab router gets them as nft
	// `notrack` rules in prerouting, the engine as Config.NoTrack.
	NoTrack []engine.NoTrackRule
	// Sysctl sets per-namespace net.netfilter sysctls in the lab router
	// (names without the prefix); the engine gets the router's values of
	// the settings it has (engine.SettingNames).
	Sysctl map[string]int64
	// Skip is set while the engine disagrees with the kernel on this
	// scenario: the test still runs the kernel and engine and logs every
	// disagreement, then skips instead of failing (unless
	// CTDOCTOR_KERNLAB_NOSKIP=1). A scenario that agrees passes anyway.
	Skip string
}

// tcpSide is one end's sequence space.
type tcpSide struct {
	isn, nxt uint32
	started  bool
	lastSeq  uint32
	lastAck  uint32
}

type connState struct {
	side [2]tcpSide
	prev *connState // the incarnation before the last NewISN
}

// builder turns steps into packets.
type builder struct {
	sc    *scenario
	conns map[int]*connState
}

func newBuilder(sc *scenario) *builder { return &builder{sc: sc, conns: map[int]*connState{}} }

func (b *builder) conn(i int) *connState {
	c := b.conns[i]
	if c == nil {
		c = &connState{}
		c.side[cli].isn = 1_000_000 + uint32(i)*7919
		c.side[srv].isn = 3_000_000_000 + uint32(i)*104729
		b.conns[i] = c
	}
	return c
}

func parseFlags(s string) (engine.TCPFlags, error) {
	var f engine.TCPFlags
	for _, r := range s {
		switch r {
		case 'S':
			f |= engine.SYN
		case 'A':
			f |= engine.ACK
		case 'F':
			f |= engine.FIN
		case 'R':
			f |= engine.RST
		case 'P':
			f |= engine.PSH
		case 'U':
			f |= engine.URG
		case 'E':
			f |= engine.ECE
		case 'C':
			f |= engine.CWR
		default:
			return 0, fmt.Errorf("unknown TCP flag %q in %q", r, s)
		}
	}
	return f, nil
}

// validTCP reports whether the flag set is one a TCP stack would act on
// (the kernel's list; ECE, CWR and PSH do not matter).
func validTCP(f engine.TCPFlags) bool {
	switch f &^ (engine.ECE | engine.CWR | engine.PSH) {
	case engine.SYN, engine.SYN | engine.URG, engine.SYN | engine.ACK, engine.RST, engine.RST | engine.ACK,
		engine.FIN | engine.ACK, engine.FIN | engine.ACK | engine.URG, engine.ACK, engine.ACK | engine.URG:
		return true
	}
	return false
}

func (b *builder) addrs(from kernlab.Side) (src, dst netip.Addr) {
	c, s := kernlab.ClientIPv4, kernlab.ServerIPv4
	if b.sc.V6 {
		c, s = kernlab.ClientIPv6, kernlab.ServerIPv6
	}
	if from == srv {
		return s, c
	}
	return c, s
}

// router is the address of a router on a side's network (it belongs to
// nobody either; R forwards its packets).
func (b *builder) router(side kernlab.Side) netip.Addr {
	a := netip.AddrFrom4([4]byte{10, 0, byte(side) + 1, 254})
	if b.sc.V6 {
		a = netip.AddrFrom16([16]byte{0xfd, 0, 0, byte(side) + 1, 14: 0, 15: 0xfe})
	}
	return a
}

func (b *builder) ports(from kernlab.Side, conn int) (sport, dport uint16) {
	cport, sp := uint16(40000+conn), uint16(80)
	if b.sc.Port != 0 {
		sp = b.sc.Port
	} else if b.sc.Proto == conntrack.UDP || b.sc.Proto == conntrack.UDPLite {
		sp = 53
	}
	if from == srv {
		return sp, cport
	}
	return cport, sp
}

// packet builds step st's packet.
func (b *builder) packet(st *step) (engine.Packet, error) {
	p := engine.Packet{
		Family:     conntrack.IPv4,
		Proto:      b.sc.Proto,
		PayloadLen: st.Len,
		Hook:       engine.Prerouting,
		Iface:      kernlab.ClientIface,
	}
	if st.From == srv {
		p.Iface = kernlab.ServerIface
	}
	if b.sc.V6 {
		p.Family = conntrack.IPv6
		if p.Proto == conntrack.ICMP {
			p.Proto = conntrack.ICMPv6
		}
	}
	p.Src, p.Dst = b.addrs(st.From)
	switch {
	case st.Unreach:
		p.Proto = conntrack.ICMP
		p.ICMPType, p.ICMPCode = 3, 3
		p.PayloadLen = 28
		if b.sc.V6 {
			p.Proto = conntrack.ICMPv6
			p.ICMPType, p.ICMPCode = 1, 4
			p.PayloadLen = 48
		}
		if st.Type > 0 {
			p.ICMPType, p.ICMPCode = uint8(st.Type), uint8(st.Code)
		}
		// The quoted packet is the peer's, in its own direction.
		e := engine.Embedded{Proto: b.sc.Proto, Src: p.Dst, Dst: p.Src}
		if st.Router {
			p.Src = b.router(st.From)
		}
		peer := 1 - st.From
		switch {
		case b.sc.Proto.HasPorts():
			e.SrcPort, e.DstPort = b.ports(peer, st.Conn)
		case b.sc.Proto == conntrack.ICMP:
			e.Proto = p.Proto
			e.ICMPType = 8
			if b.sc.V6 {
				e.ICMPType = 128
			}
			e.ICMPID = uint16(0x4000 + st.Conn)
		}
		p.Embedded, p.HasEmbedded = e, true
	case p.Proto == conntrack.TCP:
		p.SrcPort, p.DstPort = b.ports(st.From, st.Conn)
		f, err := parseFlags(st.Flags)
		if err != nil {
			return p, err
		}
		p.Flags = f
		p.Window = 65535
		if st.ZeroWin {
			p.Window = 0
		}
		c := b.conn(st.Conn)
		if st.NewISN {
			old := *c
			c.prev = &old
		}
		if st.Stale {
			if c.prev == nil {
				return p, fmt.Errorf("stale packet without a previous incarnation")
			}
			c = c.prev
		}
		me, peer := &c.side[st.From], &c.side[1-st.From]
		if st.NewISN {
			me.isn += 1 << 24
			peer.isn += 1 << 24
			me.started, peer.started = false, false
		}
		if st.Retx {
			p.Seq, p.Ack = me.lastSeq, me.lastAck
			break
		}
		switch {
		case f&engine.SYN != 0:
			p.Seq = me.isn
		case f&engine.RST != 0 && !me.started:
			p.Seq = 0 // RST answering a SYN: seq 0, ack the SYN
		default:
			if !me.started {
				me.nxt = me.isn + 1 // picked up mid-stream
			}
			p.Seq = me.nxt
		}
		if f&engine.ACK != 0 {
			if peer.started {
				p.Ack = peer.nxt
			} else {
				p.Ack = peer.isn + 1
			}
			p.Ack -= uint32(st.Behind)
		}
		if validTCP(f) && p.Seq != 0 {
			end := p.Seq + uint32(st.Len)
			if f&engine.SYN != 0 {
				end++
			}
			if f&engine.FIN != 0 {
				end++
			}
			if !me.started || end-me.nxt < 1<<31 {
				me.nxt = end
			}
			me.started = true
		}
		me.lastSeq, me.lastAck = p.Seq, p.Ack
	case p.Proto == conntrack.UDP || p.Proto == conntrack.UDPLite:
		p.SrcPort, p.DstPort = b.ports(st.From, st.Conn)
	case p.Proto == conntrack.ICMP || p.Proto == conntrack.ICMPv6:
		p.ICMPID = uint16(0x4000 + st.Conn)
		switch {
		case st.Type > 0:
			p.ICMPType = uint8(st.Type)
		case st.Type == -2:
			p.ICMPType = 0
		case st.From == cli && !b.sc.V6:
			p.ICMPType = 8
		case st.From == cli:
			p.ICMPType = 128
		case !b.sc.V6:
			p.ICMPType = 0
		default:
			p.ICMPType = 129
		}
	case p.Proto.HasPorts():
		return p, fmt.Errorf("scenario protocol %v not supported", b.sc.Proto)
	}
	return p, nil
}

// label describes a step for the transcript and the failure messages.
func label(sc *scenario, st *step) string {
	var s strings.Builder
	switch {
	case st.Idle:
		s.WriteString("nothing")
	case st.Unreach:
		fmt.Fprintf(&s, "%s", st.From)
		if st.Router {
			s.WriteString("-side router")
		}
		if st.Type > 0 {
			fmt.Fprintf(&s, " ICMP error type %d code %d", st.Type, st.Code)
		} else {
			s.WriteString(" ICMP port unreachable")
		}
	case sc.Proto == conntrack.TCP:
		fmt.Fprintf(&s, "%s [%s]", st.From, st.Flags)
	case sc.Proto.IsICMP() && st.Type == 0 && st.From == cli:
		fmt.Fprintf(&s, "%s echo request", st.From)
	case sc.Proto.IsICMP() && st.Type == 0:
		fmt.Fprintf(&s, "%s echo reply", st.From)
	default:
		fmt.Fprintf(&s, "%s", st.From)
	}
	if st.Len > 0 {
		fmt.Fprintf(&s, " len %d", st.Len)
	}
	if st.Type != 0 && !st.Unreach {
		t := st.Type
		if t == -2 {
			t = 0
		}
		fmt.Fprintf(&s, " ICMP type %d", t)
	}
	if st.Retx {
		s.WriteString(" (retransmit)")
	}
	if st.ZeroWin {
		s.WriteString(" window 0")
	}
	if st.Behind > 0 {
		fmt.Fprintf(&s, " (ack %d behind)", st.Behind)
	}
	if st.NewISN {
		s.WriteString(" (new ISN)")
	}
	if st.Stale {
		s.WriteString(" (old connection)")
	}
	if st.Conn != 0 {
		fmt.Fprintf(&s, " conn %d", st.Conn)
	}
	if st.Wait > 0 {
		fmt.Fprintf(&s, " after %v", st.Wait)
	}
	if st.Note != "" {
		fmt.Fprintf(&s, " — %s", st.Note)
	}
	return s.String()
}

// notrackNft writes a prerouting NoTrackRule as an nft rule.
func notrackNft(r *engine.NoTrackRule) (string, error) {
	if r.Hook != engine.Prerouting {
		return "", fmt.Errorf("NOTRACK rule %+v: the lab has no local traffic, only prerouting rules apply", *r)
	}
	var m []string
	if r.Iface != "" {
		m = append(m, fmt.Sprintf("iifname %q", r.Iface))
	}
	for _, pf := range []struct {
		pre  netip.Prefix
		what string
	}{{r.Src, "saddr"}, {r.Dst, "daddr"}} {
		if !pf.pre.IsValid() {
			continue
		}
		fam := "ip"
		if pf.pre.Addr().Is6() {
			fam = "ip6"
		}
		m = append(m, fmt.Sprintf("%s %s %s", fam, pf.what, pf.pre))
	}
	if r.Proto != 0 {
		m = append(m, fmt.Sprintf("meta l4proto %d", r.Proto))
	}
	for _, pr := range []struct {
		r    engine.PortRange
		what string
	}{{r.SPort, "sport"}, {r.DPort, "dport"}} {
		if pr.r == (engine.PortRange{}) {
			continue
		}
		hi := pr.r.Hi
		if hi == 0 {
			hi = pr.r.Lo
		}
		m = append(m, fmt.Sprintf("th %s %d-%d", pr.what, pr.r.Lo, hi))
	}
	return strings.Join(append(m, "notrack"), " "), nil
}

// observation is the kernel's answer to one step.
type observation struct {
	step   *step
	label  string
	pkt    engine.Packet
	sent   time.Duration // lab clock when R processed the packet
	res    kernlab.Result
	dumped time.Duration // lab clock when the table was read
	flows  []conntrack.Flow
}

// labSettings reads the lab router's conntrack settings that the engine
// has too (the timeouts, tcp_loose, …), so the engine runs with the same.
// nf_conntrack_max and buckets are global and left at the engine's
// defaults: the scenarios never come near them.
func labSettings(t *testing.T, lab *kernlab.Lab) map[string]int64 {
	t.Helper()
	var names []string
	for _, n := range engine.SettingNames() {
		if n != engine.SetMax && n != engine.SetBuckets {
			names = append(names, n)
		}
	}
	m, err := lab.Sysctls(names)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, ok := m[n]; !ok {
			t.Logf("the lab router has no %s: the engine uses its default", n)
		}
	}
	return m
}

// runKernel injects the scenario into a fresh lab and records the kernel,
// and the lab's settings.
func runKernel(t *testing.T, sc *scenario) ([]observation, map[string]int64) {
	t.Helper()
	lab := kernlab.New(t)
	for name, v := range sc.Sysctl {
		if err := lab.SetSysctl(name, v); err != nil {
			t.Fatal(err)
		}
	}
	if len(sc.NoTrack) > 0 {
		var rules []string
		for i := range sc.NoTrack {
			r, err := notrackNft(&sc.NoTrack[i])
			if err != nil {
				t.Fatal(err)
			}
			rules = append(rules, r)
		}
		lab.R.Nft("table inet kernlab_raw {\n\tchain pre {\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\t" +
			strings.Join(rules, "\n\t\t") + "\n\t}\n}\n")
	}
	settings := labSettings(t, lab)
	b := newBuilder(sc)
	var obs []observation
	var raw []byte
	for i := range sc.Steps {
		st := &sc.Steps[i]
		if st.Idle {
			time.Sleep(st.Wait)
			o := observation{step: st, label: label(sc, st)}
			var err error
			if o.flows, o.dumped, err = lab.FlowsAt(); err != nil {
				t.Fatalf("step %d (%s): %v", i+1, label(sc, st), err)
			}
			obs = append(obs, o)
			continue
		}
		p, err := b.packet(st)
		if err != nil {
			t.Fatalf("step %d (%s): %v", i+1, label(sc, st), err)
		}
		raw, err = engine.AppendIP(raw[:0], &p)
		if err != nil {
			t.Fatalf("step %d (%s): AppendIP: %v", i+1, label(sc, st), err)
		}
		if st.Wait > 0 {
			time.Sleep(st.Wait)
		}
		o := observation{step: st, label: label(sc, st), pkt: p}
		o.res, err = lab.Send(st.From, raw)
		if err != nil {
			t.Fatalf("step %d (%s): %v", i+1, label(sc, st), err)
		}
		o.sent = o.res.At
		if o.flows, o.dumped, err = lab.FlowsAt(); err != nil {
			t.Fatalf("step %d (%s): %v", i+1, label(sc, st), err)
		}
		obs = append(obs, o)
	}
	return obs, settings
}

// flowKey identifies an entry by protocol and both tuples.
func flowKey(f *conntrack.Flow) string {
	tup := func(t *conntrack.Tuple) string {
		if f.Proto.IsICMP() {
			return fmt.Sprintf("%v>%v type=%d code=%d id=%d", t.Src, t.Dst, t.ICMPType, t.ICMPCode, t.ICMPID)
		}
		return fmt.Sprintf("%v:%d>%v:%d", t.Src, t.SrcPort, t.Dst, t.DstPort)
	}
	return fmt.Sprintf("%v %v %s | %s", f.Family, f.Proto, tup(&f.Orig), tup(&f.Reply))
}

// describe prints an entry's compared fields.
func describe(f *conntrack.Flow) string {
	var s strings.Builder
	if n := f.StateName(); n != "" {
		s.WriteString(n + " ")
	}
	if f.Unreplied() {
		s.WriteString("[UNREPLIED] ")
	}
	if f.Assured() {
		s.WriteString("[ASSURED] ")
	}
	fmt.Fprintf(&s, "%ds left", f.Timeout)
	return s.String()
}

func describeTable(fs []conntrack.Flow) string {
	if len(fs) == 0 {
		return "(empty)"
	}
	var lines []string
	for i := range fs {
		lines = append(lines, flowKey(&fs[i])+": "+describe(&fs[i]))
	}
	slices.Sort(lines)
	return strings.Join(lines, "; ")
}

// kernelCtInfo prints a kernel result the way a verdict is compared.
func kernelCtInfo(r kernlab.Result) string {
	if r.Dropped {
		return "dropped"
	}
	return r.CtInfo.String()
}

func engineCtInfo(v engine.Verdict) string {
	if v.Drop {
		return "dropped"
	}
	return v.CtInfo.String()
}

// compareTables returns the differences between the kernel's and the
// engine's tables (empty when they agree).
func compareTables(kern, eng []conntrack.Flow) []string {
	em := map[string]*conntrack.Flow{}
	for i := range eng {
		em[flowKey(&eng[i])] = &eng[i]
	}
	var diffs []string
	for i := range kern {
		k := &kern[i]
		key := flowKey(k)
		e, ok := em[key]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("entry %s: kernel has it (%s), engine has none", key, describe(k)))
			continue
		}
		delete(em, key)
		var what []string
		if k.Proto == conntrack.TCP && k.State != e.State {
			what = append(what, "state")
		}
		if k.Unreplied() != e.Unreplied() {
			what = append(what, "[UNREPLIED]")
		}
		if k.Assured() != e.Assured() {
			what = append(what, "[ASSURED]")
		}
		if d := int64(k.Timeout) - int64(e.Timeout); d > 1 || d < -1 {
			what = append(what, "timeout")
		}
		if len(what) > 0 {
			diffs = append(diffs, fmt.Sprintf("entry %s: %s differ: kernel %s (status %v), engine %s (status %v)",
				key, strings.Join(what, ", "), describe(k), k.Status, describe(e), e.Status))
		}
	}
	for key, e := range em {
		diffs = append(diffs, fmt.Sprintf("entry %s: engine has it (%s), kernel has none", key, describe(e)))
	}
	slices.Sort(diffs)
	return diffs
}

// replay feeds the kernel's observations to a fresh tracker and returns
// one line per disagreement.
func replay(t *testing.T, cfg engine.Config, obs []observation) []string {
	t.Helper()
	clock := &engine.VirtualClock{}
	cfg.Clock = clock
	tr, err := engine.New(cfg)
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	var diffs []string
	for i := range obs {
		o := &obs[i]
		var v engine.Verdict
		if !o.step.Idle {
			clock.Set(o.sent)
			p := o.pkt
			v = tr.Process(&p)
		}
		clock.Set(o.dumped)
		var eng []conntrack.Flow
		if err := tr.Flows(func(f *conntrack.Flow) error { eng = append(eng, *f); return nil }); err != nil {
			t.Fatalf("engine Flows: %v", err)
		}
		at := fmt.Sprintf("step %d (%s)", i+1, o.label)
		if k, e := kernelCtInfo(o.res), engineCtInfo(v); k != e && !o.step.Idle {
			diffs = append(diffs, fmt.Sprintf("%s: ctinfo: kernel %s, engine %s (reason %q)", at, k, e, v.Reason))
		}
		for _, d := range compareTables(o.flows, eng) {
			diffs = append(diffs, at+": "+d)
		}
	}
	return diffs
}

// transcript is the kernel's behaviour, step by step, for the log.
func transcript(obs []observation) string {
	var s strings.Builder
	for i := range obs {
		o := &obs[i]
		info := kernelCtInfo(o.res)
		if o.step.Idle {
			info = "-"
		}
		fmt.Fprintf(&s, "  %2d %-50s → %-17s table: %s\n", i+1, o.label, info, describeTable(o.flows))
	}
	return s.String()
}

// runScenario runs one scenario against the kernel and the engine.
func runScenario(t *testing.T, sc *scenario) {
	obs, settings := runKernel(t, sc)
	t.Logf("kernel:\n%s", transcript(obs))
	diffs := replay(t, engine.Config{Seed: 1, Settings: settings, NoTrack: sc.NoTrack}, obs)
	if len(diffs) == 0 {
		return
	}
	msg := "engine disagrees with kernel:\n  " + strings.Join(diffs, "\n  ")
	if sc.Skip != "" && os.Getenv("CTDOCTOR_KERNLAB_NOSKIP") != "1" {
		t.Log(msg)
		t.Skip("engine disagrees with kernel: " + sc.Skip + " (CTDOCTOR_KERNLAB_NOSKIP=1 fails instead)")
	}
	t.Error(msg)
}
