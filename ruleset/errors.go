package ruleset

import (
	"errors"
	"fmt"
)

var (
	// ErrPermission: reading or entering the namespace needs privileges
	// the process does not have (CAP_NET_ADMIN, CAP_SYS_ADMIN).
	ErrPermission = errors.New("permission denied")
	// ErrUnsupported: the ruleset holds something a plan cannot be written
	// for safely (a table or chain name nft would need quoted, a firewall
	// whose tool is not installed).
	ErrUnsupported = errors.New("unsupported")

	// ErrRefused is wrapped by every [RefusedError].
	ErrRefused = errors.New("NOTRACK refused")
	// ErrNATed: a NAT rule (masquerade, snat, dnat, redirect) may apply to
	// the traffic. NAT needs the connection's entry: untracked packets
	// are not translated.
	ErrNATed = errors.New("the traffic is NATed")
	// ErrHelper: a rule assigns a conntrack helper (ftp, sip, …) that may
	// apply to the traffic; helpers need the entry too.
	ErrHelper = errors.New("the traffic uses a conntrack helper")
	// ErrRestricted: the firewall does not accept new connections to the
	// port from everyone; an accept of untracked packets could not keep
	// that restriction.
	ErrRestricted = errors.New("the firewall restricts who may reach the port")
	// ErrLoopbackClosed: the firewall does not accept every new loopback
	// connection and accepts none to any port it names; untracking
	// loopback would need an accept of untracked loopback packets that
	// would let through what it drops.
	ErrLoopbackClosed = errors.New("the firewall opens no loopback port")
	// ErrSourcePort: the traffic's replies can be told apart only by their
	// source port (UDP, UDP-Lite, SCTP, DCCP: no flag marks a new
	// connection, as SYN does for TCP), any local program may send from
	// that port (at or above net.ipv4.ip_unprivileged_port_start), and
	// the firewall drops some new packets from it: untracking the replies
	// would let such a program's packets through.
	ErrSourcePort = errors.New("the replies are told apart only by a source port any program may use")
	// ErrConflict: ctdoctor's own table for this traffic exists but does
	// not untrack all of it (edited by hand, or a partial change), or an
	// earlier ctdoctor's rules untrack more than a plan would now.
	ErrConflict = errors.New("ctdoctor's table exists but differs")
)

// RefusedError is returned by [PlanNotrack] when NOTRACK for the traffic
// would break it. errors.Is matches ErrRefused and the Reason.
type RefusedError struct {
	Selector Selector `json:"selector"`
	// Reason is ErrNATed, ErrHelper, ErrRestricted, ErrLoopbackClosed,
	// ErrSourcePort, or ErrConflict for an earlier plan's rules that
	// untrack more than a plan does now (undo them first).
	Reason error `json:"-"`
	// Rule names the rule that decides it: table, chain, handle, text.
	Rule string `json:"rule"`
	// Detail says what to do instead.
	Detail string `json:"detail"`
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("not planning NOTRACK for %s: %v (%s): %s", e.Selector, e.Reason, e.Rule, e.Detail)
}

// Unwrap lets errors.Is match both ErrRefused and the reason.
func (e *RefusedError) Unwrap() []error { return []error{ErrRefused, e.Reason} }
