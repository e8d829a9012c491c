package analyze

import "fmt"

func ruleLegacy(c *ruleContext) *Finding {
	if !c.snap.Settings.Legacy {
		return nil
	}
	t := c.r.Table
	fixes := c.limitNotes()
	if fixes == nil {
		fixes = []string{"# the table has room now; if it fills up, raise net.ipv4.ip_conntrack_max (see table-full)"}
	}
	at := len(fixes) // the planner's commands for the limit go here
	fixes = append(fixes, "# plan an upgrade: nf_conntrack (2.6.15+) has per-netns tables, keyed hashing, early drop and netlink statistics")
	return &Finding{ID: "legacy-ip-conntrack", Severity: Warning,
		Summary:  fmt.Sprintf("old ip_conntrack kernel (%s): settings live under net.ipv4.netfilter.ip_conntrack_*", c.snap.Kernel),
		Evidence: map[string]any{"kernel": c.snap.Kernel, "max": t.Max, "object_size": t.ObjectSize},
		Explanation: "Kernels before 2.6.15 (and RHEL/CentOS 5's 2.6.18) track connections with ip_conntrack, IPv4 only, with " +
			"an unkeyed hash that can be flooded. Its default limit is small (8 entries per hash bucket, 16640 on a CentOS 5 box with 520 MB of RAM) and " +
			"each entry costs more memory. The fixes are the same ideas under other names: net.ipv4.ip_conntrack_max, " +
			"net.ipv4.netfilter.ip_conntrack_tcp_timeout_established, persisted in /etc/sysctl.conf.",
		Fixes: fixes, ChangesAt: at, Changes: c.sizingChanges(true)}
}

func ruleKubeProxy(c *ruleContext) *Finding {
	k := c.snap.Kube
	if !k.Present {
		return nil
	}
	// The limit kube-proxy should set: the report's proposal (the current
	// limit when it has room), as min, with maxPerCore × CPUs not above it.
	z := c.sizing()
	limit, why := z.Max, " (the current limit: it has room)"
	if z.RaiseMax() {
		why = " (see table-full / table-near-full for why)"
	}
	if limit <= 0 {
		limit, why = 131072, " (kube-proxy's default minimum: the current limit is unknown)"
	}
	cpus := int64(max(c.snap.CPUs, 1))
	perCore := limit / cpus
	return &Finding{ID: "kube-proxy-manages", Severity: Info,
		Summary:  "kube-proxy manages conntrack settings on this node: it rewrites them every time it starts",
		Evidence: map[string]any{"evidence": k.Evidence, "max": c.r.Table.Max, "tcp_timeout_established": c.snap.Settings.Timeouts["tcp_timeout_established"], "tcp_timeout_close_wait": c.snap.Settings.Timeouts["tcp_timeout_close_wait"]},
		Explanation: "kube-proxy sets nf_conntrack_max = max(maxPerCore × CPUs, min) (32768 × CPUs and 131072 by default; only ever raising it), " +
			"raises hashsize to max / 4 when it is smaller, sets " +
			"tcp_timeout_established = 86400 and tcp_timeout_close_wait = 3600 at every start. A value tuned with sysctl is " +
			"silently overwritten at the next restart; change kube-proxy's configuration instead.",
		Fixes: []string{"# KubeProxyConfiguration (kube-proxy ConfigMap), then restart kube-proxy:",
			fmt.Sprintf("#   conntrack: {maxPerCore: %d, min: %d, tcpEstablishedTimeout: 2h, tcpCloseWaitTimeout: 1h}",
				perCore, limit),
			fmt.Sprintf("# the limit then becomes max(%d × %d CPUs, %d) = %d%s", perCore, cpus, limit, limit, why),
			"# or set maxPerCore: 0 to make kube-proxy leave the limit alone, and set it with sysctl"}}
}
