package ruleset

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Target is the network namespace a ruleset is read from and a plan is
// made for.
type Target struct {
	// NetNS is "" for the caller's own namespace, a NAME in /run/netns (as
	// `ip netns add` makes it), an absolute path to a namespace file, or a
	// PID (its /proc/PID/ns/net).
	NetNS string `json:"netns,omitempty"`
}

// Validate checks the spec's form (not that the namespace exists).
func (t Target) Validate() error {
	s := t.NetNS
	switch {
	case s == "" || isDigits(s) || filepath.IsAbs(s):
		return nil
	case strings.ContainsRune(s, '/') || s == "." || s == "..":
		return fmt.Errorf("network namespace %q: not a name from /run/netns, an absolute path or a PID", s)
	}
	return nil
}

// path is the namespace file to open ("" for the caller's own).
func (t Target) path() string {
	switch {
	case t.NetNS == "":
		return ""
	case isDigits(t.NetNS):
		return "/proc/" + t.NetNS + "/ns/net"
	case filepath.IsAbs(t.NetNS):
		return t.NetNS
	}
	return "/run/netns/" + t.NetNS
}

// Prefix is what every command of a plan for this target starts with, so
// that it runs in the namespace when pasted in a shell of the host:
// "ip netns exec NAME " for a named namespace, "nsenter --net=PATH -- " for
// a path or a PID, "" for the caller's own namespace.
func (t Target) Prefix() string {
	switch {
	case t.NetNS == "":
		return ""
	case !isDigits(t.NetNS) && !filepath.IsAbs(t.NetNS):
		return "ip netns exec " + shQuote(t.NetNS) + " "
	}
	p := filepath.Clean(t.path())
	if dir, name := filepath.Split(p); dir == "/run/netns/" && name != "" {
		return "ip netns exec " + shQuote(name) + " "
	}
	return "nsenter --net=" + shQuote(p) + " -- "
}

// String names the target for messages.
func (t Target) String() string {
	if t.NetNS == "" {
		return "this network namespace"
	}
	return "network namespace " + t.NetNS
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// shQuote quotes s for a POSIX shell when it holds anything but safe
// characters.
func shQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,:/@%+=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
