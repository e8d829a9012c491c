package apply

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/render"
)

// Apply's and rollback's progress lines fit the output's width: the long
// title of a NOTRACK step, a long sysctl label and an outcome too long to
// stay beside it are wrapped under the action, and no word is lost.
func TestProgressFitsWidth(t *testing.T) {
	for _, width := range []string{"80", "50"} {
		t.Setenv("COLUMNS", width)
		var b bytes.Buffer
		title := "stop tracking loopback traffic: accept its untracked packets first (inet fw input, inet fw input, inet fw input, inet fw input), then NOTRACK at raw priority (nft, all or nothing)"
		label := "net.netfilter.nf_conntrack_tcp_timeout_established = 86400"
		p := startProgressLine(&b, "undo step 3/3", title, label)
		p.finish("restored, verified")
		p = startProgressLine(&b, "step 1/3", "set a value", "nft batch (15 lines)")
		note := "left as is: the value was changed since the apply, by someone else, to 7200; rollback --force restores it anyway"
		p.finish(note)
		out := b.String()
		w := render.Width(&b)
		for i, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			if render.VisibleWidth(l) > w {
				t.Errorf("COLUMNS=%s: line %d is %d columns: %q", width, i+1, render.VisibleWidth(l), l)
			}
		}
		// (at 50 columns the sysctl's name is broken in two: compare without blanks)
		flat := strings.Join(strings.Fields(out), "")
		for _, want := range []string{"undo step 3/3 " + title + " " + label + ": restored, verified",
			"step 1/3 set a value nft batch (15 lines): " + note} {
			if !strings.Contains(flat, strings.Join(strings.Fields(want), "")) {
				t.Errorf("COLUMNS=%s: output lost words of %q:\n%s", width, want, out)
			}
		}
	}
}
