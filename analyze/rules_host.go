package analyze

import (
	"fmt"
	"strings"
)

func ruleLegacy(c *ruleContext) *Finding {
	if !c.snap.Settings.Legacy {
		return nil
	}
	t := c.r.Table
	return &Finding{ID: "legacy-ip-conntrack", Severity: Warning,
		Summary:  fmt.Sprintf("old ip_conntrack kernel (%s): settings live under net.ipv4.netfilter.ip_conntrack_*", c.snap.Kernel),
		Evidence: map[string]any{"kernel": c.snap.Kernel, "max": t.Max, "object_size": t.ObjectSize},
		Explanation: "Kernels before 2.6.15 (and RHEL/CentOS 5's 2.6.18) track connections with ip_conntrack, IPv4 only, with " +
			"an unkeyed hash that can be flooded. Its default limit is small (RAM in MB × 16 on CentOS 5: 16640 on 1 GB, seed 004) and " +
			"each entry costs more memory. The fixes are the same ideas under other names: net.ipv4.ip_conntrack_max, " +
			"net.ipv4.netfilter.ip_conntrack_tcp_timeout_established, persisted in /etc/sysctl.conf.",
		Fixes: append(c.setSysctl("max", SuggestMax(max(t.Count, t.Max), t.Max)),
			"# plan an upgrade: nf_conntrack (2.6.15+) has per-netns tables, keyed hashing, early drop and netlink statistics")}
}

func ruleKubeProxy(c *ruleContext) *Finding {
	k := c.snap.Kube
	if !k.Present {
		return nil
	}
	return &Finding{ID: "kube-proxy-manages", Severity: Info,
		Summary:  "kube-proxy manages conntrack settings on this node: it rewrites them every time it starts",
		Evidence: map[string]any{"evidence": k.Evidence, "max": c.r.Table.Max, "tcp_timeout_established": c.snap.Settings.Timeouts["tcp_timeout_established"], "tcp_timeout_close_wait": c.snap.Settings.Timeouts["tcp_timeout_close_wait"]},
		Explanation: "kube-proxy sets nf_conntrack_max = max(32768 × CPUs, 131072) (only ever raising it), hashsize = max / 4, " +
			"tcp_timeout_established = 86400 and tcp_timeout_close_wait = 3600 at every start. A value tuned with sysctl is " +
			"silently overwritten at the next restart; change kube-proxy's configuration instead.",
		Fixes: []string{"# KubeProxyConfiguration (kube-proxy ConfigMap), then restart kube-proxy:",
			"conntrack: {maxPerCore: 65536, min: 262144, tcpEstablishedTimeout: 2h, tcpCloseWaitTimeout: 1h}",
			"# set maxPerCore: 0 to make kube-proxy leave nf_conntrack_max alone (" + strings.Join(k.Evidence, "; ") + ")"}}
}
