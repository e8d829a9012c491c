package tune

import (
	"fmt"
	"strings"

	"github.com/ctdoctor/ctdoctor/ruleset"
)

// Target is the host and namespace a plan's commands and actions address.
type Target struct {
	// Root is the directory the host is read and written through ("/" live;
	// a fake root in tests).
	Root string
	// NetNS is how a person reaches the plan's namespace from the host's
	// shell: "" or "init" for the caller's own, a /run/netns name, a path
	// (/proc/PID/ns/net) or "pid:N".
	NetNS string
	// Init says the namespace is the initial one, where the global keys
	// (nf_conntrack_max, nf_conntrack_buckets) are writable and sysctl.d
	// applies at boot.
	Init bool
	// Legacy is set on ip_conntrack kernels (2.6.18 era).
	Legacy bool
	// Module is the conntrack module's state (built in, loaded, read-only /sys).
	Module ModuleState
}

// Prefix returns what a shell command needs in front of it to run in the
// target namespace ("ip netns exec web1 ", "nsenter --net=/proc/42/ns/net -- "),
// or "" for the caller's own. A command printed without it and pasted on
// the host would change the host instead. It is the same prefix the
// ruleset planner gives its commands.
func (t Target) Prefix() string {
	ns := t.NetNS
	if ns == "" || ns == "init" || t.Init {
		return ""
	}
	return ruleset.Target{NetNS: strings.TrimPrefix(ns, "pid:")}.Prefix()
}

// SysctlName returns the sysctl name of a conntrack setting ("max",
// "tcp_timeout_established") on this kernel: net.netfilter.nf_conntrack_*,
// or the ip_conntrack names on legacy kernels.
func (t Target) SysctlName(setting string) string {
	if t.Legacy {
		if setting == "max" {
			return "net.ipv4.ip_conntrack_max"
		}
		if setting == "buckets" {
			return "net.ipv4.netfilter.ip_conntrack_buckets"
		}
		return "net.ipv4.netfilter.ip_conntrack_" + setting
	}
	return "net.netfilter.nf_conntrack_" + setting
}

// SysctlPath is the /proc/sys file of a sysctl name.
func SysctlPath(name string) string {
	return "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
}

// IsGlobal reports whether a conntrack setting is one value for the whole
// host, writable only from the initial namespace.
func IsGlobal(setting string) bool {
	return setting == "max" || setting == "buckets" || setting == "hashsize"
}

// ModuleName is the conntrack module's name on this kernel.
func (t Target) ModuleName() string {
	if t.Legacy {
		return "ip_conntrack"
	}
	return "nf_conntrack"
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// fileCommand is the shell command that writes content to path, exactly.
func fileCommand(p, content string) string {
	var lines []string
	for l := range strings.SplitSeq(strings.TrimSuffix(content, "\n"), "\n") {
		lines = append(lines, shellQuote(l))
	}
	return fmt.Sprintf("printf '%%s\\n' %s > %s", strings.Join(lines, " "), shellQuote(p))
}
