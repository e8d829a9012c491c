package render

import (
	"strings"
	"testing"
)

func TestWrap(t *testing.T) {
	s := "stop tracking loopback traffic: accept its untracked packets first (inet fw input, inet fw input), then NOTRACK at raw priority (nft, all or nothing)"
	lines := Wrap(s, 40, "  step 1/3  ", "            ")
	if len(lines) < 4 {
		t.Fatalf("want several lines at 40 columns, got %q", lines)
	}
	var words []string
	for i, l := range lines {
		if w := VisibleWidth(l); w > 40 {
			t.Errorf("line %d is %d columns wide: %q", i, w, l)
		}
		prefix := "            "
		if i == 0 {
			prefix = "  step 1/3  "
		}
		if !strings.HasPrefix(l, prefix) || strings.HasPrefix(l[len(prefix):], " ") {
			t.Errorf("line %d does not start with its prefix %q: %q", i, prefix, l)
		}
		words = append(words, strings.Fields(l[len(prefix):])...)
	}
	if got := strings.Join(words, " "); got != s {
		t.Errorf("words lost or reordered:\n got %q\nwant %q", got, s)
	}
	if got := Wrap("", 80, "> ", "  "); len(got) != 1 || got[0] != "> " {
		t.Errorf("Wrap of nothing = %q", got)
	}
	long := strings.Repeat("x", 30)
	for _, l := range Wrap(long, 20, "ab", "ab") {
		if VisibleWidth(l) > 20 {
			t.Errorf("an unbreakable word ran past the width: %q", l)
		}
	}
}
