package analyze

import "strconv"

// Kinds of Change.
const (
	// ChangeSysctl sets a conntrack sysctl; Setting is its name without
	// prefix ("max", "tcp_timeout_time_wait").
	ChangeSysctl = "sysctl"
	// ChangeModuleParam sets a module parameter; Setting is "hashsize".
	ChangeModuleParam = "module-param"
	// ChangeNotrack exempts traffic from tracking; Match says which.
	ChangeNotrack = "notrack"
	// ChangeKubeProxy changes kube-proxy's configuration (Setting is the
	// KubeProxyConfiguration field, e.g. "conntrack.maxPerCore").
	ChangeKubeProxy = "kube-proxy"
	// ChangeGenericSysctl sets a sysctl that is not one of conntrack's own
	// (net.ipv4.ip_local_port_range): Key is its full name, Value the value
	// to write as sysctl -w takes it ("10000 65535"), CurrentValue what the
	// host holds ("" when unknown), and Scope "netns" for a key each
	// network namespace has its own of (net.*), "global" otherwise.
	ChangeGenericSysctl = "generic-sysctl"
)

// Change is one change a finding proposes, as data: the planner (package
// tune) turns it into plan steps with commands for the host's actual
// kernel, ruleset and files, and the printed fixes come from those. A
// finding's commands exist only as Changes: its Fixes hold prose (comment
// lines), and the planner's commands go in at Finding.ChangesAt.
type Change struct {
	Kind string `json:"kind"`
	// Setting is the sysctl (without prefix), module parameter or
	// kube-proxy field.
	Setting string `json:"setting,omitempty"`
	// Key is the full name on this host (net.netfilter.nf_conntrack_max,
	// net.ipv4.ip_conntrack_max, /sys/module/nf_conntrack/parameters/hashsize).
	Key string `json:"key,omitempty"`
	// Current and Proposed are the values as numbers; -1 where that does
	// not apply (notrack, a generic sysctl whose value is not one number)
	// or the current value is unknown.
	Current  int64 `json:"current"`
	Proposed int64 `json:"proposed"`
	// Value and CurrentValue are a generic sysctl's proposed and current
	// values as the kernel prints them ("10000 65535"; CurrentValue "" when
	// unknown).
	Value        string `json:"value,omitempty"`
	CurrentValue string `json:"current_value,omitempty"`
	// Scope is "global" (one value for the host: max, buckets/hashsize)
	// or "netns" (timeouts, the namespace's ruleset, net.* sysctls).
	Scope string `json:"scope"`
	// Match selects the traffic of a notrack change.
	Match *TrafficMatch `json:"match,omitempty"`
	// Reason says why this value.
	Reason string `json:"reason"`
	// CostBytes is the kernel memory the new value may cost (sizing).
	CostBytes int64 `json:"cost_bytes,omitempty"`
}

// TrafficMatch is the traffic a notrack change exempts: loopback, or one
// service (both directions of its port).
type TrafficMatch struct {
	Loopback bool   `json:"loopback,omitempty"`
	Proto    string `json:"proto,omitempty"` // "tcp" or "udp"
	Port     uint16 `json:"port,omitempty"`
}

// genericSysctl is the change that sets a sysctl outside conntrack's own
// to value; current is what the host holds ("" unknown). Values that are
// one number also fill Current and Proposed.
func genericSysctl(key, current, value, scope, reason string) Change {
	c := Change{Kind: ChangeGenericSysctl, Key: key, Value: value, CurrentValue: current,
		Current: -1, Proposed: -1, Scope: scope, Reason: reason}
	if n, err := strconv.ParseInt(value, 10, 64); err == nil {
		c.Proposed = n
	}
	if n, err := strconv.ParseInt(current, 10, 64); err == nil {
		c.Current = n
	}
	return c
}
