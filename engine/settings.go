package engine

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Setting names, as the sysctls under /proc/sys/net/netfilter/ (a
// "net.netfilter." prefix is accepted too). Timeouts are in seconds.
const (
	SetMax                      = "nf_conntrack_max"
	SetBuckets                  = "nf_conntrack_buckets"
	SetTCPLoose                 = "nf_conntrack_tcp_loose"
	SetTCPBeLiberal             = "nf_conntrack_tcp_be_liberal"
	SetTCPMaxRetrans            = "nf_conntrack_tcp_max_retrans"
	SetTCPTimeoutSynSent        = "nf_conntrack_tcp_timeout_syn_sent"
	SetTCPTimeoutSynRecv        = "nf_conntrack_tcp_timeout_syn_recv"
	SetTCPTimeoutEstablished    = "nf_conntrack_tcp_timeout_established"
	SetTCPTimeoutFinWait        = "nf_conntrack_tcp_timeout_fin_wait"
	SetTCPTimeoutCloseWait      = "nf_conntrack_tcp_timeout_close_wait"
	SetTCPTimeoutLastAck        = "nf_conntrack_tcp_timeout_last_ack"
	SetTCPTimeoutTimeWait       = "nf_conntrack_tcp_timeout_time_wait"
	SetTCPTimeoutClose          = "nf_conntrack_tcp_timeout_close"
	SetTCPTimeoutMaxRetrans     = "nf_conntrack_tcp_timeout_max_retrans"
	SetTCPTimeoutUnacknowledged = "nf_conntrack_tcp_timeout_unacknowledged"
	SetUDPTimeout               = "nf_conntrack_udp_timeout"
	SetUDPTimeoutStream         = "nf_conntrack_udp_timeout_stream"
	SetICMPTimeout              = "nf_conntrack_icmp_timeout"
	SetICMPv6Timeout            = "nf_conntrack_icmpv6_timeout"
	SetGenericTimeout           = "nf_conntrack_generic_timeout"
	SetGRETimeout               = "nf_conntrack_gre_timeout"
	SetGRETimeoutStream         = "nf_conntrack_gre_timeout_stream"
)

// DefaultSettings returns the kernel's defaults for every setting the
// tracker reads (nf_conntrack_max and buckets as a 5.15+ kernel sizes them
// on a host with 8 GiB or more: 262144 each).
func DefaultSettings() map[string]int64 {
	return map[string]int64{
		SetMax:                      262144,
		SetBuckets:                  262144,
		SetTCPLoose:                 1,
		SetTCPBeLiberal:             0,
		SetTCPMaxRetrans:            3,
		SetTCPTimeoutSynSent:        120,
		SetTCPTimeoutSynRecv:        60,
		SetTCPTimeoutEstablished:    432000,
		SetTCPTimeoutFinWait:        120,
		SetTCPTimeoutCloseWait:      60,
		SetTCPTimeoutLastAck:        30,
		SetTCPTimeoutTimeWait:       120,
		SetTCPTimeoutClose:          10,
		SetTCPTimeoutMaxRetrans:     300,
		SetTCPTimeoutUnacknowledged: 300,
		SetUDPTimeout:               30,
		SetUDPTimeoutStream:         120,
		SetICMPTimeout:              30,
		SetICMPv6Timeout:            30,
		SetGenericTimeout:           600,
		SetGRETimeout:               30,
		SetGRETimeoutStream:         180,
	}
}

// SettingNames lists the setting names the tracker knows, sorted.
func SettingNames() []string {
	names := make([]string, 0, 24)
	for k := range DefaultSettings() {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// CanonicalSetting maps a sysctl name in any accepted spelling
// ("net.netfilter.nf_conntrack_max", "net/netfilter/nf_conntrack_max",
// "nf_conntrack_max", and "net.nf_conntrack_max") to the tracker's name, or
// reports that it is unknown.
func CanonicalSetting(name string) (string, error) {
	n := strings.ReplaceAll(strings.TrimSpace(name), "/", ".")
	n = strings.TrimPrefix(n, "net.netfilter.")
	n = strings.TrimPrefix(n, "net.")
	if _, ok := DefaultSettings()[n]; ok {
		return n, nil
	}
	return "", fmt.Errorf("unknown setting %q (known: %s)", name, strings.Join(SettingNames(), ", "))
}

// ParseSetting parses "name=value" (as `sysctl` prints it, spaces allowed).
func ParseSetting(kv string) (name string, value int64, err error) {
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		return "", 0, fmt.Errorf("setting %q: want name=value", kv)
	}
	name, err = CanonicalSetting(k)
	if err != nil {
		return "", 0, err
	}
	value, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("setting %s: value %q is not an integer", name, strings.TrimSpace(v))
	}
	if err := checkSetting(name, value); err != nil {
		return "", 0, err
	}
	return name, value, nil
}

func checkSetting(name string, v int64) error {
	switch name {
	case SetMax, SetBuckets:
		if v < 1 || v > 1<<30 {
			return fmt.Errorf("setting %s=%d: must be between 1 and %d", name, v, 1<<30)
		}
	case SetTCPLoose, SetTCPBeLiberal:
		if v != 0 && v != 1 {
			return fmt.Errorf("setting %s=%d: must be 0 or 1", name, v)
		}
	default:
		if v < 0 || v > 1<<31/1000 {
			return fmt.Errorf("setting %s=%d: must be between 0 and %d", name, v, 1<<31/1000)
		}
	}
	return nil
}
