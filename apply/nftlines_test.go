package apply

import (
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// A long line of an nft batch is broken at blanks outside quotes, each
// part fits, and nft reads the broken lines as the same rule.
func TestNftLines(t *testing.T) {
	line := `insert rule inet fw input position 2 iif "lo" tcp sport 8081 tcp flags & (syn | ack) != syn ct state untracked accept comment "ctdoctor notrack lo, a comment with blanks"`
	parts := nftLines(line, 60)
	if len(parts) < 3 {
		t.Fatalf("want the line broken, got %q", parts)
	}
	for i, p := range parts {
		if n := utf8.RuneCountInString(p); n > 60 {
			t.Errorf("part %d is %d columns: %q", i, n, p)
		}
		if strings.Count(p, `"`)%2 != 0 {
			t.Errorf("part %d breaks a quoted string: %q", i, p)
		}
	}
	joined := strings.Join(strings.Fields(strings.ReplaceAll(strings.Join(parts, "\n"), " \\\n", " ")), " ")
	if joined != line {
		t.Errorf("the parts do not join back:\n got %q\nwant %q", joined, line)
	}
	if got := nftLines("add table inet x", 60); len(got) != 1 {
		t.Errorf("a short line was broken: %q", got)
	}

	// nft itself: the broken batch is the same batch (checked, not applied,
	// in a namespace of the test's own).
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("skipped: nft is not installed (apt-get install nftables)")
	}
	n := nstest.New(t, "nft")
	n.Nft("table inet fw { chain input { type filter hook input priority filter; policy accept; ct state established accept; }; }")
	batch := strings.Join(parts, "\n") + "\n"
	cmd := exec.Command("ip", "netns", "exec", n.Name, "nft", "-c", "-f", "-")
	cmd.Stdin = strings.NewReader(strings.Replace(batch, "position 2 ", "", 1))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("nft -c rejects the broken lines: %v\n%s\n%s", err, out, batch)
	}
}
