package tune

import (
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/ruleset"
)

// A plan that inserts several accept rules into one chain (loopback to and
// from an open port: one for the requests, one for the replies) names the
// chain once in the step's title.
func TestStepTitleNamesEachChainOnce(t *testing.T) {
	tables, err := ruleset.ParseSave(strings.NewReader(`*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`), ruleset.BackendIptablesLegacy, "ip")
	if err != nil {
		t.Fatal(err)
	}
	fw := Firewall{Ruleset: &ruleset.Ruleset{Tables: tables, Tools: ruleset.DefaultTools(), Nftables: true}}
	steps, err := fw.PlanNotrack(analyze.TrafficMatch{Loopback: true}, Target{})
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) == 0 || len(steps[0].Actions) < 2 {
		t.Fatalf("want a step with several accept rules, got %+v", steps)
	}
	if title := steps[0].Title; strings.Count(title, "ip filter INPUT") != 1 {
		t.Errorf("title names the chain %d times: %s", strings.Count(title, "ip filter INPUT"), title)
	}
}
