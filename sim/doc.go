// Package sim simulates a host's connection-tracking table: it turns a
// scenario — conntrack settings, NOTRACK rules and workloads of TCP, UDP
// and ICMP traffic — into packets, feeds them to an [engine.Tracker] on a
// virtual clock, and samples the table into a timeline.
//
// A [Scenario] is read from YAML ([ParseScenario], [LoadScenario]) or taken
// from the built-in ones ([Builtins]). A [Simulator] runs it: every
// connection is a short program of packets (handshake, requests and
// responses with consistent sequence numbers, the close in the order of the
// side that closes first) scheduled on a hierarchical timing wheel, so that
// an hour of 10,000 new connections per second runs in well under a minute.
// The [Result] holds the timeline (entries by protocol and TCP state, usage,
// and the kernel's drop counters per step) and a summary: the peak, the time
// of the first drop, the steady count.
//
// Modelling choices, each the kernel's behaviour or a documented
// simplification:
//
//   - Loopback traffic passes OUTPUT and then PREROUTING, but the kernel
//     tracks it once, at OUTPUT: the packet keeps its entry across the
//     loopback device and PREROUTING ignores it ("previously seen"). A
//     workload on iface "lo" therefore sends every packet through the
//     OUTPUT hook, and a NOTRACK rule must match there (a PREROUTING-only
//     rule does not untrack loopback traffic, as on a real host).
//   - Client ports are taken in turn per destination, as Linux's connect()
//     does (a hashed per-destination offset, then the next free port), so a
//     client reuses a 4-tuple after cycling through its port range; a SYN
//     that finds the old entry in TIME_WAIT reopens it, and the count for
//     one client and server:port never exceeds the port range.
//   - A connection whose packet conntrack drops retransmits it like Linux:
//     a SYN (or a connection's first UDP/ICMP packet) after 1 s, 3 s, 7 s …
//     (the gap doubling) up to syn_retries times, later packets after
//     200 ms, 400 ms … up to 6 times; then the connection gives up (a
//     "failed" connection). An unanswered SYN is retransmitted the same way.
//   - Arrivals are a Poisson process at the workload's rate (time-varying
//     rates by thinning).
//   - Packets within one millisecond share the clock reading (the wheel's
//     tick); conntrack timeouts are in seconds, so this does not show.
package sim
