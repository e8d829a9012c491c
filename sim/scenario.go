package sim

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
)

// Scenario is a simulated host: its conntrack settings, its NOTRACK rules
// and the traffic it sees.
type Scenario struct {
	Name        string
	Description string
	// Duration is the virtual time simulated; Step the timeline's sample interval.
	Duration time.Duration
	Step     time.Duration
	// Seed makes runs repeatable: arrivals, addresses, ports and the
	// tracker's hash key all derive from it.
	Seed uint64
	// CPUs is the number of per-CPU statistics lines (default 1).
	CPUs int
	// Settings override the kernel defaults, keyed by canonical sysctl name
	// (see [engine.CanonicalSetting]).
	Settings map[string]int64
	// NoTrack are raw-table NOTRACK rules, in order.
	NoTrack   []engine.NoTrackRule
	Workloads []Workload
}

// Kind is how a workload uses its connections.
type Kind uint8

// Workload kinds.
const (
	// Short connections carry one request and its response, then close.
	Short Kind = iota
	// Keepalive connections carry a request every Interval for Lifetime, then close.
	Keepalive
)

func (k Kind) String() string {
	if k == Keepalive {
		return "keepalive"
	}
	return "short"
}

// Role is where the simulated host sits on a workload's path; it decides
// the hook each direction's packets pass.
type Role uint8

// Roles.
const (
	// Server: the host answers (client packets enter at PREROUTING, its
	// answers leave through OUTPUT).
	Server Role = iota
	// Client: the host opens the connections (OUTPUT out, PREROUTING back).
	Client
	// Router: the host forwards both directions (both at PREROUTING), as a
	// NAT gateway or a container host does.
	Router
)

func (r Role) String() string {
	switch r {
	case Client:
		return "client"
	case Router:
		return "router"
	}
	return "server"
}

// Dist is a distribution of durations: fixed, or exponential with a mean.
type Dist struct {
	Mean        time.Duration
	Exponential bool
}

func (d Dist) String() string {
	if d.Exponential {
		return "exponential mean " + d.Mean.String()
	}
	return d.Mean.String()
}

// RateKind says how a workload's rate varies.
type RateKind uint8

// Rate kinds.
const (
	// Constant is a fixed number of new connections per second.
	Constant RateKind = iota
	// Ramp goes linearly From → To over the workload's active window.
	Ramp
	// Daily follows a day's cosine: Peak at PeakAt (a time of day, the run
	// starting at midnight), Trough twelve hours away.
	Daily
)

// Rate is a workload's rate of new connections per second.
type Rate struct {
	Kind         RateKind
	Value        float64 // Constant
	From, To     float64 // Ramp
	Peak, Trough float64 // Daily
	PeakAt       time.Duration
}

// day is the period of a Daily rate.
const day = 24 * time.Hour

// At returns the rate at time t for a workload active from start to stop.
func (r Rate) At(t, start, stop time.Duration) float64 {
	switch r.Kind {
	case Ramp:
		if stop <= start {
			return r.To
		}
		f := float64(t-start) / float64(stop-start)
		f = math.Min(1, math.Max(0, f))
		return r.From + (r.To-r.From)*f
	case Daily:
		ph := 2 * math.Pi * float64(t-r.PeakAt) / float64(day)
		return r.Trough + (r.Peak-r.Trough)*(1+math.Cos(ph))/2
	}
	return r.Value
}

// Max returns the highest rate the workload reaches.
func (r Rate) Max() float64 {
	switch r.Kind {
	case Ramp:
		return math.Max(r.From, r.To)
	case Daily:
		return math.Max(r.Peak, r.Trough)
	}
	return r.Value
}

func (r Rate) String() string {
	switch r.Kind {
	case Ramp:
		return fmt.Sprintf("%s→%s/s", fmtRate(r.From), fmtRate(r.To))
	case Daily:
		return fmt.Sprintf("daily %s/s at %s, %s/s trough", fmtRate(r.Peak), clockTime(r.PeakAt), fmtRate(r.Trough))
	}
	return fmtRate(r.Value) + "/s"
}

func fmtRate(v float64) string {
	switch {
	case v >= 1e6 && math.Mod(v, 1e5) == 0:
		return trimFloat(v/1e6) + "M"
	case v >= 1e3 && math.Mod(v, 100) == 0:
		return trimFloat(v/1e3) + "k"
	}
	return trimFloat(v)
}

func trimFloat(v float64) string { return fmt.Sprintf("%.4g", v) }

// clockTime formats d as hh:mm:ss (hours may exceed 24).
func clockTime(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%02d:%02d:%02d", int(d/time.Hour), int(d/time.Minute)%60, int(d/time.Second)%60)
}

// Workload is one stream of connections.
type Workload struct {
	Name  string
	Proto conntrack.Proto // TCP, UDP or ICMP
	Rate  Rate
	// Start and Stop bound the arrivals (Stop 0 = the end of the run);
	// connections already open finish normally.
	Start, Stop time.Duration
	// Clients and Servers are the prefixes addresses are drawn from.
	Clients, Servers []netip.Prefix
	// ServerPorts are the servers' ports (taken in turn); ClientPorts the
	// clients' ephemeral range (default 32768–60999, ip_local_port_range).
	ServerPorts, ClientPorts engine.PortRange
	// Iface is the interface the traffic uses ("lo": loopback, tracked at
	// OUTPUT only; see the package documentation). Default "eth0".
	Iface string
	// Host is where the simulated host sits on the path (ignored on lo).
	Host Role
	Kind Kind
	// Lifetime is how long a connection stays open after its handshake: a
	// short connection's request takes this long to answer; a keepalive one
	// closes after it.
	Lifetime Dist
	// Interval is the gap between a keepalive connection's requests.
	Interval Dist
	// RTT is the round-trip time; each packet takes half of it.
	RTT time.Duration
	// ClientCloses says the client sends the first FIN (else the server).
	ClientCloses bool
	// Unanswered is the share (0–1) of connections whose first packet gets
	// no answer: a SYN left in SYN_SENT and retransmitted, a UDP request or
	// ping without a reply.
	Unanswered float64
	// SYNFlood sends SYNs from random spoofed sources that never complete;
	// the host answers with one SYN/ACK (SYN cookies do not retransmit)
	// unless Unanswered says it does not.
	SYNFlood bool
	// DNS makes a UDP workload one query and one answer per random source
	// port (server port 53 by default).
	DNS bool
	// MiddleboxIdleDrop, when set, is the idle time after which a middlebox
	// forgets a keepalive connection: a connection whose next request would
	// come later than that is lost without a FIN or RST crossing this host,
	// so its entry stays ESTABLISHED for tcp_timeout_established.
	MiddleboxIdleDrop time.Duration
	// SYNRetries is how often a dropped or unanswered first packet is
	// retransmitted (default 6, net.ipv4.tcp_syn_retries).
	SYNRetries int
}

// Default values of a workload's optional fields.
const (
	DefaultClientPortLo = 32768
	DefaultClientPortHi = 60999
	DefaultSYNRetries   = 6
	DefaultIface        = "eth0"
)

// defaultStep picks a sample interval giving a few hundred samples.
func defaultStep(d time.Duration) time.Duration {
	for _, s := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second,
		15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute,
		15 * time.Minute, 30 * time.Minute, time.Hour} {
		if d/s <= 600 {
			return s
		}
	}
	return d / 600
}

// Validate checks a scenario built in code (ParseScenario already checks
// what it reads) and fills the defaults.
func (s *Scenario) Validate() error {
	if s.Duration <= 0 {
		return fmt.Errorf("scenario %s: duration must be positive", s.Name)
	}
	if s.Step <= 0 {
		s.Step = defaultStep(s.Duration)
	}
	if s.Step < time.Millisecond {
		return fmt.Errorf("scenario %s: step %s is below the simulator's 1ms resolution", s.Name, s.Step)
	}
	if s.CPUs <= 0 {
		s.CPUs = 1
	}
	for name, v := range s.Settings {
		if _, _, err := engine.ParseSetting(fmt.Sprintf("%s=%d", name, v)); err != nil {
			return fmt.Errorf("scenario %s: %w", s.Name, err)
		}
	}
	if len(s.Workloads) == 0 {
		return fmt.Errorf("scenario %s: no workloads", s.Name)
	}
	for i := range s.Workloads {
		if err := s.Workloads[i].validate(); err != nil {
			return fmt.Errorf("scenario %s: workloads[%d] (%s): %w", s.Name, i, s.Workloads[i].Name, err)
		}
	}
	return nil
}

func (w *Workload) validate() error {
	switch w.Proto {
	case conntrack.TCP, conntrack.UDP, conntrack.ICMP:
	default:
		return fmt.Errorf("proto must be tcp, udp or icmp")
	}
	if w.Rate.Max() < 0 || w.Rate.From < 0 || w.Rate.To < 0 || w.Rate.Trough < 0 || math.IsNaN(w.Rate.Max()) || math.IsInf(w.Rate.Max(), 0) {
		return fmt.Errorf("rate must be a finite, non-negative number")
	}
	if w.Stop != 0 && w.Stop <= w.Start {
		return fmt.Errorf("stop (%s) must come after start (%s)", w.Stop, w.Start)
	}
	if len(w.Clients) == 0 || len(w.Servers) == 0 {
		return fmt.Errorf("client and server addresses are required")
	}
	fam := w.Servers[0].Addr().Is4()
	for _, p := range append(slices.Clone(w.Clients), w.Servers...) {
		if !p.IsValid() || p.Addr().Is4() != fam || p.Addr().Is4In6() {
			return fmt.Errorf("client and server prefixes must all be IPv4 or all IPv6")
		}
	}
	if w.ClientPorts == (engine.PortRange{}) {
		w.ClientPorts = engine.PortRange{Lo: DefaultClientPortLo, Hi: DefaultClientPortHi}
	}
	if w.ClientPorts.Hi == 0 {
		w.ClientPorts.Hi = w.ClientPorts.Lo
	}
	if w.ClientPorts.Lo == 0 || w.ClientPorts.Hi < w.ClientPorts.Lo {
		return fmt.Errorf("client_ports %d-%d is not a range of ports", w.ClientPorts.Lo, w.ClientPorts.Hi)
	}
	if w.DNS && w.ServerPorts == (engine.PortRange{}) {
		w.ServerPorts = engine.PortRange{Lo: 53, Hi: 53}
	}
	if w.ServerPorts.Hi == 0 {
		w.ServerPorts.Hi = w.ServerPorts.Lo
	}
	if w.Proto != conntrack.ICMP && (w.ServerPorts.Lo == 0 || w.ServerPorts.Hi < w.ServerPorts.Lo) {
		return fmt.Errorf("server_port is required for %s", w.Proto)
	}
	if w.Iface == "" {
		w.Iface = DefaultIface
	}
	if w.Unanswered < 0 || w.Unanswered > 1 || math.IsNaN(w.Unanswered) {
		return fmt.Errorf("unanswered must be a share between 0 and 1")
	}
	if w.SYNFlood && w.Proto != conntrack.TCP {
		return fmt.Errorf("syn_flood needs proto tcp")
	}
	if w.DNS && w.Proto != conntrack.UDP {
		return fmt.Errorf("dns needs proto udp")
	}
	if w.MiddleboxIdleDrop < 0 || w.MiddleboxIdleDrop > 0 && (w.Proto != conntrack.TCP || w.Kind != Keepalive) {
		return fmt.Errorf("middlebox_idle_drop needs a tcp keepalive workload")
	}
	if w.SYNRetries < 0 || w.SYNRetries > 15 {
		return fmt.Errorf("syn_retries must be between 0 and 15")
	}
	if w.Lifetime.Mean < 0 || w.Interval.Mean < 0 || w.RTT < 0 {
		return fmt.Errorf("lifetime, interval and rtt must not be negative")
	}
	if w.Kind == Keepalive && w.Interval.Mean <= 0 {
		w.Interval = Dist{Mean: time.Second}
	}
	if w.RTT == 0 {
		w.RTT = time.Millisecond
		if w.Iface == "lo" {
			w.RTT = 50 * time.Microsecond
		}
	}
	return nil
}

// Describe returns a one-line description of the workload.
func (w *Workload) Describe() string {
	what := w.Proto.String()
	switch {
	case w.SYNFlood:
		what = "tcp SYN flood"
	case w.DNS:
		what = "dns"
	case w.Proto == conntrack.TCP:
		what = "tcp " + w.Kind.String()
	}
	dst := prefixesString(w.Servers)
	if w.Proto != conntrack.ICMP {
		dst += ":" + portsString(w.ServerPorts)
	}
	s := fmt.Sprintf("%s %s, %s → %s on %s", what, w.Rate, prefixesString(w.Clients), dst, w.Iface)
	if w.Unanswered > 0 {
		s += fmt.Sprintf(", %.3g%% unanswered", w.Unanswered*100)
	}
	if w.MiddleboxIdleDrop > 0 {
		s += fmt.Sprintf(", middlebox forgets after %s idle", w.MiddleboxIdleDrop)
	}
	return s
}

func prefixesString(ps []netip.Prefix) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ","
		}
		if p.IsSingleIP() {
			s += p.Addr().String()
		} else {
			s += p.String()
		}
	}
	return s
}

func portsString(r engine.PortRange) string {
	if r.Hi > r.Lo {
		return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
	}
	return fmt.Sprint(r.Lo)
}

// Apply overrides the scenario's settings (canonical names, as
// [engine.ParseSetting] returns them).
func (s *Scenario) Apply(settings map[string]int64) {
	if s.Settings == nil {
		s.Settings = map[string]int64{}
	}
	for k, v := range settings {
		s.Settings[k] = v
	}
}

// EffectiveSettings returns the kernel defaults with the scenario's overrides.
func (s *Scenario) EffectiveSettings() map[string]int64 {
	m := engine.DefaultSettings()
	for k, v := range s.Settings {
		m[k] = v
	}
	return m
}

// Clone returns a deep copy of the scenario.
func (s *Scenario) Clone() *Scenario {
	c := *s
	c.Settings = make(map[string]int64, len(s.Settings))
	for k, v := range s.Settings {
		c.Settings[k] = v
	}
	c.NoTrack = slices.Clone(s.NoTrack)
	c.Workloads = slices.Clone(s.Workloads)
	for i := range c.Workloads {
		c.Workloads[i].Clients = slices.Clone(s.Workloads[i].Clients)
		c.Workloads[i].Servers = slices.Clone(s.Workloads[i].Servers)
	}
	return &c
}
