package ruleset_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ctdoctor/ctdoctor/ruleset"
)

// Plan NOTRACK for loopback under a RHEL-style iptables ruleset (here
// parsed from iptables-save text; ruleset.Read reads a live namespace).
// The firewall accepts new loopback connections to tcp/80 only, so only
// loopback traffic to and from that port is untracked: the accept of those
// untracked packets goes before the first rule that looks at conntrack,
// and NOTRACK goes in ctdoctor's own nft table. Replies from the port are
// told apart by their source port and their TCP flags: a SYN from port 80
// (a local program connecting from it) stays tracked. Loopback
// connections to other ports stay tracked, and rejected.
func Example() {
	save := `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 80 -m state --state NEW -j ACCEPT
-A INPUT -j REJECT
COMMIT
`
	tables, err := ruleset.ParseSave(strings.NewReader(save), ruleset.BackendIptablesLegacy, "ip")
	if err != nil {
		fmt.Println(err)
		return
	}
	rs := &ruleset.Ruleset{Tables: tables, Tools: ruleset.DefaultTools(), Nftables: true}
	plan, err := ruleset.PlanNotrack(rs, ruleset.Loopback(), ruleset.Target{NetNS: "demo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, c := range plan.Commands() {
		fmt.Println(c)
	}
	// Output:
	// ip netns exec demo iptables-legacy -w -I INPUT 1 -i lo -p tcp -m tcp --dport 80 -m conntrack --ctstate UNTRACKED -m comment --comment "ctdoctor notrack lo" -j ACCEPT
	// ip netns exec demo iptables-legacy -w -I INPUT 1 -i lo -p tcp -m tcp --sport 80 ! --syn -m conntrack --ctstate UNTRACKED -m comment --comment "ctdoctor notrack lo" -j ACCEPT
	// ip netns exec demo nft -f - <<'EOF'
	// create table inet ctdoctor_notrack_lo
	// add chain inet ctdoctor_notrack_lo prerouting { type filter hook prerouting priority -300; policy accept; }
	// add rule inet ctdoctor_notrack_lo prerouting iif "lo" tcp dport 80 notrack comment "ctdoctor notrack lo"
	// add rule inet ctdoctor_notrack_lo prerouting iif "lo" tcp sport 80 tcp flags & (syn | ack) != syn notrack comment "ctdoctor notrack lo"
	// add chain inet ctdoctor_notrack_lo output { type filter hook output priority -300; policy accept; }
	// add rule inet ctdoctor_notrack_lo output oif "lo" tcp dport 80 notrack comment "ctdoctor notrack lo"
	// add rule inet ctdoctor_notrack_lo output oif "lo" tcp sport 80 tcp flags & (syn | ack) != syn notrack comment "ctdoctor notrack lo"
	// EOF
}

// Read a namespace's ruleset and print the plan as a reviewable script;
// traffic that must stay tracked is refused with the reason.
func ExampleRead() {
	t := ruleset.Target{NetNS: "demo"}
	rs, err := ruleset.Read(context.Background(), t)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	plan, err := ruleset.PlanNotrack(rs, ruleset.Service("tcp", 8080), t)
	var refused *ruleset.RefusedError
	switch {
	case errors.As(err, &refused):
		fmt.Println("not possible:", refused.Reason, "-", refused.Rule)
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
	default:
		_ = ruleset.WriteScript(os.Stdout, plan)
	}
}
