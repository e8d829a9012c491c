package analyze

import "fmt"

// minEntries is the smallest table worth a traffic-mix finding.
const minEntries = 100

func ruleUnrepliedFlood(c *ruleContext) *Finding {
	b := c.r.Breakdown
	// Entries without a reply that are not ASSURED: what a flood or scan
	// leaves behind (and what early drop can evict).
	un := b.Status["unreplied_not_assured"]
	if b.Total < minEntries || un < minEntries || share(un, b.Total) < 0.25 {
		return nil
	}
	sev := Info
	if c.r.Table.Usage >= 0.5 || share(un, b.Total) >= 0.5 {
		sev = Warning
	}
	var topSvc []map[string]any
	for _, s := range b.TopServices {
		if s.Unreplied > 0 && len(topSvc) < 5 {
			topSvc = append(topSvc, map[string]any{"proto": s.Proto, "port": s.Port, "unreplied": s.Unreplied})
		}
	}
	synSent, synRecv := b.TCPState["SYN_SENT"], b.TCPState["SYN_RECV"]
	// The shorter timeouts (Changes) first, then what else helps.
	var fixes []string
	if b.Unreplied["tcp"] > 0 {
		fixes = append(fixes, "# a SYN flood: SYN cookies (net.ipv4.tcp_syncookies, on by default) protect the listening socket, not this table; "+
			"SYNPROXY (nft synproxy, iptables -j SYNPROXY) answers the SYNs before conntrack tracks them, so only completed handshakes take an entry")
	}
	fixes = append(fixes, "# drop or rate-limit the sources at the edge; see top_sources")
	var changes []Change
	if b.Unreplied["tcp"] > 0 {
		changes = append(changes, c.timeoutChanges("half-open connections hold their entry for the SYN timeouts; 30 s is ample for a real handshake",
			"tcp_timeout_syn_sent", int64(30), "tcp_timeout_syn_recv", int64(30))...)
	}
	if b.Unreplied["udp"] > 0 {
		changes = append(changes, c.timeoutChanges("a UDP request that gets no answer within 10 s is not answered at all", "udp_timeout", int64(10))...)
	}
	return &Finding{ID: "unreplied-flood", Severity: sev, Changes: changes,
		Summary: fmt.Sprintf("%s of entries never got a reply (%d; by protocol: tcp %d, udp %d)", pct(share(un, b.Total)), un, b.Unreplied["tcp"], b.Unreplied["udp"]),
		Evidence: map[string]any{"unreplied_not_assured": un, "unreplied": b.Status["unreplied"], "total": b.Total, "share": round3(share(un, b.Total)),
			"by_l4": b.Unreplied, "syn_sent": synSent, "syn_recv": synRecv, "services": topSvc, "top_sources": b.TopSources},
		Explanation: "[UNREPLIED] entries are connections whose other side never answered: SYN floods, scans, UDP sent to " +
			"closed ports or dead peers, DNS retries. Each one still holds an entry until its timeout (SYN_SENT 120 s, UDP 30 s). " +
			"They are the only entries early drop can evict when the table is full, but a flood creates them faster.",
		Fixes: fixes}
}

func ruleTimeWaitDominant(c *ruleContext) *Finding {
	b := c.r.Breakdown
	tw := b.TCPState["TIME_WAIT"]
	if b.Total < minEntries || share(tw, b.Total) < 0.5 {
		return nil
	}
	sev := Info
	if c.r.Table.Usage >= 0.5 {
		sev = Warning
	}
	twTimeout := c.snap.Settings.Timeouts["tcp_timeout_time_wait"]
	var svc []map[string]any
	for _, s := range b.TopServices {
		if s.TimeWait > 0 && len(svc) < 5 {
			svc = append(svc, map[string]any{"proto": s.Proto, "port": s.Port, "time_wait": s.TimeWait, "loopback": s.Loopback})
		}
	}
	ev := map[string]any{"time_wait": tw, "total": b.Total, "share": round3(share(tw, b.Total)),
		"tcp_timeout_time_wait": twTimeout, "services": svc}
	// Little's law: entries = rate × lifetime. It gives the rate only while
	// every TIME_WAIT entry lives its full timeout; when a client has run out
	// of local ports, new connections reuse (and end) TIME_WAIT entries
	// early and the count stays flat, so count / timeout is a lower bound.
	rateEst := ""
	capped, size := c.portCappedTuples()
	switch {
	case twTimeout <= 0:
	case len(capped) > 0:
		rateEst = fmt.Sprintf(" — at least %d closed connections per second (a lower bound: %s → %s:%d holds %d entries for its %d local ports, so new connections reuse TIME_WAIT tuples; see local-ports-exhausted)",
			tw/twTimeout, capped[0].Src, capped[0].Dst, capped[0].Port, capped[0].Count, size)
		ev["closed_per_second_at_least"] = tw / twTimeout
	default:
		rateEst = fmt.Sprintf(" — about %d closed connections per second", tw/twTimeout)
		ev["closed_per_second"] = tw / twTimeout
	}
	return &Finding{ID: "timewait-dominant", Severity: sev,
		Summary:  fmt.Sprintf("%s of entries are TIME_WAIT (%d): short-lived connections%s", pct(share(tw, b.Total)), tw, rateEst),
		Evidence: ev,
		Explanation: "A closed TCP connection stays in the table as TIME_WAIT for nf_conntrack_tcp_timeout_time_wait (120 s by " +
			"default, twice the socket's own 60 s TIME_WAIT). A server that opens a new connection per request — nginx to a " +
			"local upstream without keepalive is the classic case, with over 90% of the table in TIME_WAIT — fills the table with " +
			"connections that are already over. The steady count is connection rate × timeout, as long as the clients have " +
			"local ports to spare: a client that has used up its local port range to one destination reuses TIME_WAIT tuples, " +
			"and the count stops growing with the rate.",
		Changes: c.timeoutChanges("a closed connection needs its TIME_WAIT entry only while late packets can still arrive; 30 s covers them", "tcp_timeout_time_wait", int64(30)),
		Fixes: []string{"# reuse connections: nginx 'keepalive 32;' in the upstream block plus proxy_http_version 1.1 and an empty Connection header",
			"# or stop tracking the busy path entirely (see loopback-tracked / busy-port-tracked)"},
		ChangesAt: 1}
}

func ruleLoopbackTracked(c *ruleContext) *Finding {
	b := c.r.Breakdown
	// A full table (or one dropping now) is reason enough: whatever
	// loopback traffic is tracked competes for the entries that are
	// missing, and is itself dropped when none is left.
	dropRate, _ := rate(c.r, "drop")
	pressure := c.r.Table.Usage >= 0.9 || dropRate > 0
	if b.Total < minEntries || b.Loopback < minEntries || share(b.Loopback, b.Total) < 0.1 && !pressure {
		return nil
	}
	sev := Info
	if c.r.Table.Usage >= 0.5 || share(b.Loopback, b.Total) >= 0.5 {
		sev = Warning
	}
	summary := fmt.Sprintf("%s of entries are loopback connections (%d) that need no tracking", pct(share(b.Loopback, b.Total)), b.Loopback)
	if share(b.Loopback, b.Total) < 0.1 {
		summary = fmt.Sprintf("%d loopback connections compete for a table that is %s full; they need no tracking", b.Loopback, pct(c.r.Table.Usage))
	}
	var svc []map[string]any
	for _, s := range b.TopServices {
		if s.Loopback > 0 && len(svc) < 5 {
			svc = append(svc, map[string]any{"proto": s.Proto, "port": s.Port, "loopback": s.Loopback})
		}
	}
	return &Finding{ID: "loopback-tracked", Severity: sev,
		Summary:  summary,
		Evidence: map[string]any{"loopback": b.Loopback, "total": b.Total, "share": round3(share(b.Loopback, b.Total)), "services": svc},
		Explanation: "Connections on the loopback interface (nginx to an upstream on the same host, a local database, " +
			"health checks) never cross a firewall or NAT, yet each one takes a table entry — often half the table on a web " +
			"server. NOTRACK in the raw table exempts them. Untracked packets no longer match `ct state established,related` or " +
			"`ct state new` rules (`--state NEW`, `--state RELATED,ESTABLISHED`): without an accept rule for untracked packets " +
			"ahead of them, the traffic you exempted falls through to the firewall's default policy and is dropped — the service goes down.",
		Changes: notrackChange(TrafficMatch{Loopback: true}, "loopback connections cross no firewall boundary and no NAT")}
}

func ruleBusyPort(c *ruleContext) *Finding {
	b := c.r.Breakdown
	if b.Total < minEntries || len(b.TopServices) == 0 {
		return nil
	}
	// The busiest service by entries that are not on loopback (those are
	// loopback-tracked's business).
	top := b.TopServices[0]
	for _, s := range b.TopServices {
		if s.Count-s.Loopback > top.Count-top.Loopback {
			top = s
		}
	}
	nonLoop := top.Count - top.Loopback
	if nonLoop < minEntries || share(nonLoop, b.Total) < 0.3 {
		return nil
	}
	sev := Info
	if c.r.Table.Usage >= 0.5 {
		sev = Warning
	}
	return &Finding{ID: "busy-port-tracked", Severity: sev,
		Summary:  fmt.Sprintf("%s/%d holds %s of the table (%d entries)", top.Proto, top.Port, pct(share(top.Count, b.Total)), top.Count),
		Evidence: map[string]any{"proto": top.Proto, "port": top.Port, "count": top.Count, "share": round3(share(top.Count, b.Total)), "time_wait": top.TimeWait, "unreplied": top.Unreplied},
		Explanation: "One service accounts for a large part of the table. If this host does not NAT that traffic and its firewall " +
			"rules for the port do not depend on connection state, NOTRACK for the port frees all of those entries. " +
			"Check first: NATed traffic (Docker published ports, Kubernetes services) must stay tracked, and untracked packets " +
			"match no `ct state` rule, so the accept rule for them must come first.",
		Changes: notrackChange(TrafficMatch{Proto: top.Proto, Port: top.Port}, fmt.Sprintf("%s/%d holds %s of the table", top.Proto, top.Port, pct(share(top.Count, b.Total))))}
}

// idleMinShare is the share of the listed entries that ESTABLISHED
// entries idle beyond the keepalive window must reach (and minEntries the
// number) for established-timeout-long to fire. The 5-day default is the
// kernel's everywhere; it is worth a finding only where it visibly fills
// the table with dead connections: 5% of the entries is what shortening the
// timeout would at least free, below that the change is not worth making.
const idleMinShare = 0.05

func ruleEstablishedTimeoutLong(c *ruleContext) *Finding {
	est, ok := c.snap.Settings.Timeouts["tcp_timeout_established"]
	ka := keepaliveTotal(c.snap.TCP)
	if !ok || est <= 0 || est <= 86400 {
		return nil
	}
	b := c.r.Breakdown
	idle := b.IdleEstablished
	if idle < minEntries || share(idle, b.Total) < idleMinShare {
		return nil
	}
	estN := b.TCPState["ESTABLISHED"]
	sev := Info
	if c.r.Table.Usage >= 0.5 && share(idle, b.Total) >= 0.3 {
		sev = Warning
	}
	ev := map[string]any{"tcp_timeout_established": est, "established": estN, "idle_established": idle,
		"idle_share": round3(share(idle, b.Total)), "total": b.Total}
	sum := fmt.Sprintf("ESTABLISHED entries live %s without traffic", durationWords(est))
	if ka > 0 {
		ev["tcp_keepalive_total"] = ka
		sum += fmt.Sprintf("; TCP keepalive gives up after %s", durationWords(ka))
	}
	sum += fmt.Sprintf(" — %d entries (%s of the table) have been idle longer than that", idle, pct(share(idle, b.Total)))
	newEst := int64(86400)
	if ka > 0 && 2*ka > newEst {
		newEst = 2 * ka
	}
	return &Finding{ID: "established-timeout-long", Severity: sev, Summary: sum, Evidence: ev,
		Explanation: "An ESTABLISHED entry is removed only after nf_conntrack_tcp_timeout_established seconds without a packet " +
			"(5 days by default). When a peer vanishes (crash, NAT or firewall timeout, a keepalive that gave up) no FIN or RST " +
			"is seen and the entry lingers for the full 5 days, long after both ends forgot the connection. Any value well above the keepalive window " +
			"(keepalive_time + intvl × probes) keeps dead connections around.",
		Changes: c.timeoutChanges("at least twice the time TCP keepalive takes to give up on a peer, so no live connection loses its entry", "tcp_timeout_established", newEst)}
}

func durationWords(s int64) string {
	switch {
	case s%86400 == 0 && s >= 86400:
		return fmt.Sprintf("%d day(s)", s/86400)
	case s >= 3600:
		return fmt.Sprintf("%.1f h", float64(s)/3600)
	case s >= 60:
		return fmt.Sprintf("%.0f min", float64(s)/60)
	}
	return fmt.Sprintf("%d s", s)
}
