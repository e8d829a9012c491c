package sim

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// PacketsPerSecond is the simulator's speed the run-time estimate assumes:
// packets sent through the tracker per second of one core. The built-in
// scenarios run at 1.2–4.8 million a second (docs/benchmarks.md: tables
// at their max, where every new connection runs early drop, are the
// slowest); 2 million errs towards a longer estimate.
const PacketsPerSecond = 2e6

// Estimate is what a run of a scenario will cost, worked out from the
// scenario alone before it runs.
type Estimate struct {
	// Connections is the expected number of connections opened.
	Connections float64
	// Packets is the expected number of packets sent through the tracker
	// when conntrack drops none (a dropped packet is sent again, up to the
	// workload's retries, so drops add to it).
	Packets float64
}

// Wall is the run's expected wall time at [PacketsPerSecond].
// It saturates at the longest Duration (292 years) rather than wrap.
func (e Estimate) Wall() time.Duration {
	ns := e.Packets / PacketsPerSecond * float64(time.Second)
	if !(ns < math.MaxInt64) { // NaN too
		return math.MaxInt64
	}
	return time.Duration(ns)
}

func (e Estimate) String() string {
	return fmt.Sprintf("about %s packets (%s connections), %s at %s packets/s", Approx(e.Packets), Approx(e.Connections),
		e.Wall().Round(time.Second), Approx(PacketsPerSecond))
}

// Approx writes a large count in words: 950, 12 thousand, 4.8 million,
// 48 billion.
func Approx(x float64) string {
	for _, u := range []struct {
		v    float64
		name string
	}{{1e12, "trillion"}, {1e9, "billion"}, {1e6, "million"}, {1e3, "thousand"}} {
		if v := x / u.v; v >= 1 {
			if v < 10 {
				return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0") + " " + u.name
			}
			return fmt.Sprintf("%.0f %s", v, u.name)
		}
	}
	return fmt.Sprintf("%.0f", x)
}

// Estimate works out the run's connections and packets from the
// workloads' rates, windows and connection programs (the scenario must be
// valid: Validate fills the defaults it reads). A keepalive connection
// still open when the run ends has sent only part of its packets: the
// estimate counts what it sent until then.
func (s *Scenario) Estimate() Estimate {
	var e Estimate
	for i := range s.Workloads {
		w := &s.Workloads[i]
		start, stop := w.Start, w.Stop
		if stop == 0 || stop > s.Duration {
			stop = s.Duration
		}
		if start >= stop {
			continue
		}
		n := w.Rate.integral(start, stop)
		e.Connections += n
		// The time left to a connection when it opens runs from
		// duration − stop to duration − start.
		e.Packets += n * w.packetsPerConnection((s.Duration-stop).Seconds(), (s.Duration-start).Seconds())
	}
	return e
}

// integral is the number of arrivals between start and stop of a workload
// active over that window.
func (r Rate) integral(start, stop time.Duration) float64 {
	t := (stop - start).Seconds()
	switch r.Kind {
	case Ramp:
		return (r.From + r.To) / 2 * t
	case Daily:
		// ∫ trough + (peak − trough)(1 + cos φ(t))/2, φ = 2π(t − peak_at)/day
		k := 2 * math.Pi / day.Seconds()
		phi := func(d time.Duration) float64 { return k * (d - r.PeakAt).Seconds() }
		osc := (math.Sin(phi(stop)) - math.Sin(phi(start))) / k
		return r.Trough*t + (r.Peak-r.Trough)/2*(t+osc)
	}
	return r.Value * t
}

// packetsPerConnection is the mean number of packets one connection sends
// through the tracker when none is dropped (its program in conn.go), for
// connections that open with between a and b seconds of the run left.
func (w *Workload) packetsPerConnection(a, b float64) float64 {
	u := w.Unanswered
	h := w.RTT.Seconds() / 2
	life, gap := w.Lifetime.Mean.Seconds(), w.Interval.Mean.Seconds()
	if w.Proto != conntrack.TCP {
		// A query and its answer (only the query when unanswered); a
		// keepalive exchange repeats one every interval while it lives.
		if w.Kind == Short {
			return 2 - u
		}
		// Exchange k > 0 starts k intervals (each with the answer's
		// half round trip, unless unanswered) after the first, if that is
		// before the connection's end, lifetime + one round trip after
		// it opened. Fixed intervals end on the last whole one: half an
		// interval fewer on average than random ones.
		spent, _ := lifeSpent(a, b, life, w.Lifetime.Exponential)
		first := 1.0
		if !w.Interval.Exponential {
			first = 0.5
		}
		answered := first + (spent+2*h)/max(gap+h, 1e-9)
		unanswered := first + (spent+2*h)/max(gap, 1e-9)
		return (1-u)*2*answered + u*unanswered
	}
	switch {
	case w.SYNFlood:
		return u + 2*(1-u) // a SYN, and a SYN/ACK when answered
	case w.Kind == Short:
		// SYN, SYN/ACK, ACK and request, response, two FINs and the last
		// ACK; an unanswered SYN is sent 1 + syn_retries times.
		return u*float64(1+w.SYNRetries) + (1-u)*8
	}
	// Keepalive: the handshake, the first request, its response and ACK
	// (6), then a request, response and ACK every interval while it lives,
	// and three segments to close it.
	cycle := max(gap+2*h, 1e-9)
	unanswered := u * float64(1+w.SYNRetries)
	// Fixed intervals end on the last whole one: half a cycle fewer on
	// average than random ones.
	short := 0.0
	if !w.Interval.Exponential {
		short = 0.5
	}
	if m := w.MiddleboxIdleDrop.Seconds(); m > 0 {
		switch {
		case !w.Interval.Exponential && gap > m:
			return unanswered + (1-u)*6 // lost at the first gap
		case w.Interval.Exponential && life > 0:
			// A middlebox forgets a connection when the idle time after
			// an exchange — the gap to the next request, or to the
			// close when that comes first — exceeds its limit. Both are
			// exponential (the lifetime taken as one): the first of
			// them comes after min(gap, life), exponential with the sum
			// of their rates, and is the gap with the gap's share.
			rg, rl := 1/max(gap, 1e-9), 1/life
			pass := 1 - math.Exp(-(rg+rl)*m)
			next, closes := rg/(rg+rl)*pass, rl/(rg+rl)*pass
			exchanges := next / (1 - next)
			spent, ended := lifeSpent(a, b, exchanges*cycle, true)
			return unanswered + (1-u)*(6+3*spent/cycle+3*closes/(1-next)*ended)
		}
	}
	spent, ended := lifeSpent(a, b, max(0, life-2*h), w.Lifetime.Exponential)
	return unanswered + (1-u)*(6+3*max(0, spent/cycle-short)+3*ended)
}

// lifeSpent returns, for a connection that lives D (fixed at mu, or
// exponential with mean mu) and opens with R seconds of the run left (R
// uniform between a and b), the mean of min(R, D), the time it lives
// within the run, and the chance D ≤ R that it ends within the run.
func lifeSpent(a, b, mu float64, exponential bool) (spent, ended float64) {
	if mu <= 0 {
		return 0, 1
	}
	if b-a < 1e-9 {
		if exponential {
			return mu * (1 - math.Exp(-a/mu)), 1 - math.Exp(-a/mu)
		}
		return min(a, mu), map[bool]float64{true: 1, false: 0}[mu <= a]
	}
	if exponential {
		d := math.Exp(-a/mu) - math.Exp(-b/mu)
		return mu - mu*mu*d/(b-a), 1 - mu*d/(b-a)
	}
	var area float64 // ∫ min(R, mu) dR over [a, b]
	switch {
	case b <= mu:
		area = (b*b - a*a) / 2
	case a >= mu:
		area = mu * (b - a)
	default:
		area = (mu*mu-a*a)/2 + mu*(b-mu)
	}
	return area / (b - a), max(0, b-max(a, mu)) / (b - a)
}
