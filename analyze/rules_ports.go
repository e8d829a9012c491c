package analyze

import "fmt"

// Linux's default net.ipv4.ip_local_port_range, assumed when the host's is
// unknown.
const (
	defaultPortLow  = 32768
	defaultPortHigh = 60999
)

// The wider range local-ports-exhausted proposes (55,536 ports); a
// listening port inside it is kept out with ip_local_reserved_ports, as
// the fix says.
const (
	portRangeKey   = "net.ipv4.ip_local_port_range"
	wideLo, wideHi = 10000, 65535
)

// A client's connect() on Linux takes even-numbered local ports first and
// turns to the odd ones only when no even port is free or reusable: the
// entries of one tuple stop growing at half the local port range when
// ports come free quickly (the server closes first, or tcp_tw_reuse hands
// out TIME_WAIT ports), and at the whole range otherwise. Both are caps.
// local-ports-exhausted fires from 90% of the even half (portsCappedShare
// of the range) and calls the ports exhausted from 90% of the whole
// (portsExhaustedShare). The kernel tests show both regimes.
const (
	portsCappedShare    = 0.45
	portsExhaustedShare = 0.9
)

// portRange returns the client local port range to compare tuples with:
// the host's, or Linux's default when it was not read (known is false).
func (c *ruleContext) portRange() (lo, hi int64, known bool) {
	t := c.snap.TCP
	if t.PortRangeLow > 0 && t.PortRangeHigh >= t.PortRangeLow {
		return t.PortRangeLow, t.PortRangeHigh, true
	}
	return defaultPortLow, defaultPortHigh, false
}

// portCappedTuples returns the tuples (source address → destination
// address:port) whose TCP entries fill at least portsCappedShare of the
// local port range: that client's connections to that destination have hit
// the cap, and new ones reuse the tuples of closed ones. A
// tuple with clearly more entries than the range has ports is left out: its
// client uses another range, so the comparison says nothing about it.
func (c *ruleContext) portCappedTuples() (capped []TupleCount, size int64) {
	lo, hi, _ := c.portRange()
	size = hi - lo + 1
	for _, t := range c.r.Breakdown.TopTuples {
		n := t.Count // at most Error below the true count
		if n >= minEntries && float64(n) >= portsCappedShare*float64(size) && n <= size+size/100 {
			capped = append(capped, t)
		}
	}
	return capped, size
}

func ruleLocalPortsExhausted(c *ruleContext) *Finding {
	capped, size := c.portCappedTuples()
	if len(capped) == 0 {
		return nil
	}
	lo, hi, known := c.portRange()
	top := capped[0]
	rangeNote := fmt.Sprintf("this host's net.ipv4.ip_local_port_range %d–%d", lo, hi)
	if !known {
		rangeNote = fmt.Sprintf("Linux's default local port range %d–%d (this host's net.ipv4.ip_local_port_range was not read)", lo, hi)
	}
	summary := fmt.Sprintf("local ports exhausted: %s → %s:%d holds %d TCP entries (%d in TIME_WAIT) for %d local ports — new connections reuse the tuples of closed ones",
		top.Src, top.Dst, top.Port, top.Count, top.TimeWait, size)
	if float64(top.Count) < portsExhaustedShare*float64(size) {
		summary = fmt.Sprintf("local ports running out: %s → %s:%d holds %d TCP entries (%d in TIME_WAIT), %s of its %d local ports — connect() takes the even half first, and new connections reuse the tuples of closed ones",
			top.Src, top.Dst, top.Port, top.Count, top.TimeWait, pct(float64(top.Count)/float64(size)), size)
	}
	rows := make([]map[string]any, 0, len(capped))
	for _, t := range capped {
		row := map[string]any{"src": t.Src, "dst": t.Dst, "port": t.Port, "entries": t.Count, "time_wait": t.TimeWait,
			"share_of_ports": round3(float64(t.Count) / float64(size))}
		if t.Error > 0 {
			row["count_error"] = t.Error
		}
		rows = append(rows, row)
	}
	fixes := []string{
		"# reuse connections instead of opening one per request: in nginx, 'keepalive 32;' in the upstream block with 'proxy_http_version 1.1;' and 'proxy_set_header Connection \"\";'",
		"# or spread the connections over more destinations: each upstream address:port gets a local port range of its own",
	}
	var changes []Change
	if lo > wideLo || hi < wideHi {
		fixes = append(fixes,
			fmt.Sprintf("# or widen the client's local port range (per network namespace; keep listening ports out of it with net.ipv4.ip_local_reserved_ports). More ports also mean more table entries: %d instead of %d per destination", wideHi-wideLo+1, size))
		cur := ""
		if known {
			cur = fmt.Sprintf("%d %d", lo, hi)
		}
		changes = append(changes, genericSysctl(portRangeKey, cur, fmt.Sprintf("%d %d", wideLo, wideHi), "netns",
			fmt.Sprintf("a client gets %d local ports per destination instead of %d; the range is each network namespace's own", wideHi-wideLo+1, size)))
	}
	return &Finding{ID: "local-ports-exhausted", Severity: Warning,
		Summary:  summary,
		Evidence: map[string]any{"tuples": rows, "local_ports": size, "port_range": fmt.Sprintf("%d-%d", lo, hi), "port_range_known": known},
		Explanation: "A TCP connection is identified by source address, source port, destination address and destination port. " +
			"When one client opens many short connections to one destination, only its local (source) port changes, so it can " +
			"hold at most as many connections — and table entries — as its local port range has ports; compared here with " + rangeNote + ". " +
			"Linux's connect() takes even-numbered ports first and odd ones only when no even port is free or reusable, so the " +
			"entries often stop at half the range. A new connection on the port of a closed one whose entry is still in TIME_WAIT " +
			"(120 s, twice the socket's 60 s) reuses the tuple, and the kernel replaces that entry; when the client's own sockets " +
			"on every port are still in TIME_WAIT too, connect() fails with \"Cannot assign requested address\" (EADDRNOTAVAIL) " +
			"unless tcp_tw_reuse allows the reuse (the default on loopback, for sockets about 1 s old). " +
			"The count of entries then stays flat at the range size however fast connections arrive, so it no longer tells the " +
			"connection rate: the rate is at least count / TIME_WAIT timeout, and can be far higher.",
		Fixes: fixes, ChangesAt: len(fixes), Changes: changes}
}
