package analyze

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
)

// Change is one change a finding proposes, as data: the planner (package
// tune) turns it into plan steps with commands for the host's actual
// kernel, ruleset and files, and the printed fixes come from those. It is
// the structured twin of Finding.Fixes.
type Change struct {
	Kind string `json:"kind"`
	// Setting is the sysctl (without prefix), module parameter or
	// kube-proxy field.
	Setting string `json:"setting,omitempty"`
	// Key is the full name on this host (net.netfilter.nf_conntrack_max,
	// net.ipv4.ip_conntrack_max, /sys/module/nf_conntrack/parameters/hashsize).
	Key      string `json:"key,omitempty"`
	Current  int64  `json:"current"`
	Proposed int64  `json:"proposed"`
	// Scope is "global" (one value for the host: max, buckets/hashsize)
	// or "netns" (timeouts, the namespace's ruleset).
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
