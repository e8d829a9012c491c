package cli

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"github.com/ctdoctor/ctdoctor/tune"
)

// The demo namespace's loopback NOTRACK is one nft batch of some 1,700
// characters. The 80-column report prints it over lines that all fit, and
// the command pasted into bash exactly as printed gives exactly the
// ruleset the plan's batch gives (nft list ruleset of two namespaces with
// the same firewall, one after each).
func TestPrintedNftBatchIsThePlans(t *testing.T) {
	ns := nstest.New(t, "nft", "conntrack", "nginx", "curl", "wrk", "bash")
	ns.Nft(nstest.DemoRuleset)
	ns.StartNginx()
	ns.Run("wrk", "-t", "1", "-c", "8", "-d", "2s", "-H", "Connection: close", "http://127.0.0.1/")

	t.Setenv("COLUMNS", "80")
	var out, errb bytes.Buffer
	if code := Main([]string{"--netns", ns.Name, "--interval", "0", "--color", "never"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	text := out.String()
	block := text[strings.Index(text, "loopback-tracked"):]
	if i := strings.Index(block[1:], "\n● "); i >= 0 {
		block = block[:i+1]
	}
	for _, l := range strings.Split(block, "\n") {
		if n := len([]rune(l)); n > 80 {
			t.Errorf("a line of the loopback fix is %d columns wide:\n%s", n, l)
		}
	}
	var printed string
	for _, c := range printedCommands(t, text, "loopback-tracked") {
		if strings.Contains(c, " nft '") {
			printed = c
		}
	}
	if strings.Count(printed, "\n") < 10 {
		t.Fatalf("the nft batch is not printed over lines:\n%s\nreport:\n%s", printed, text)
	}

	p := planJSON(t, "--netns", ns.Name, "--interval", "0", "--no-predict")
	var script string
	for _, s := range p.Applicable() {
		for _, a := range s.Actions {
			if a.Kind == tune.KindNft && s.Notrack != nil && s.Notrack.Loopback {
				script = a.Script
			}
		}
	}
	if script == "" {
		t.Fatalf("no nft batch for loopback in the plan: %+v", p.Steps)
	}

	pasted, planned := nstest.New(t, "nft"), nstest.New(t, "nft")
	pasted.Nft(nstest.DemoRuleset)
	planned.Nft(nstest.DemoRuleset)
	cmd := strings.Replace(printed, "ip netns exec "+ns.Name+" ", "ip netns exec "+pasted.Name+" ", 1)
	if o, err := exec.Command("bash", "--norc", "--noprofile", "-c", cmd).CombinedOutput(); err != nil {
		t.Fatalf("the printed command: %v\n%s\n%s", err, o, cmd)
	}
	nft := exec.Command("ip", "netns", "exec", planned.Name, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(script)
	if o, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("the plan's batch: %v\n%s\n%s", err, o, script)
	}
	got, want := pasted.Run("nft", "list", "ruleset"), planned.Run("nft", "list", "ruleset")
	if got != want {
		t.Errorf("the printed command gives\n%s\nthe plan's batch gives\n%s", got, want)
	}
	if !strings.Contains(got, "notrack") || got == nstest.DemoRuleset {
		t.Errorf("no NOTRACK rule after the batch:\n%s", got)
	}
}
