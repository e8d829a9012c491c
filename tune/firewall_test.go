package tune

import (
	"slices"
	"testing"
)

func TestShellWords(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{`iptables -w -I INPUT 3 -m conntrack --ctstate UNTRACKED -m comment --comment "ctdoctor notrack lo" -j ACCEPT`,
			[]string{"iptables", "-w", "-I", "INPUT", "3", "-m", "conntrack", "--ctstate", "UNTRACKED", "-m", "comment", "--comment", "ctdoctor notrack lo", "-j", "ACCEPT"}},
		{`a 'b c' d\ e "f\"g" ''`, []string{"a", "b c", "d e", `f"g`, ""}},
		{"  x   y  ", []string{"x", "y"}},
	} {
		got, err := shellWords(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("shellWords(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{`a "b`, `a 'b`, `a $(b)`, `a; b`, `a | b`, `"$HOME"`} {
		if got, err := shellWords(bad); err == nil {
			t.Errorf("shellWords(%q) = %q, want an error", bad, got)
		}
	}
}

func TestHeredocBody(t *testing.T) {
	body, ok := heredocBody("ip netns exec x nft -f - <<'EOF'\ncreate table inet t\nadd chain inet t c\nEOF")
	if !ok || body != "create table inet t\nadd chain inet t c\n" {
		t.Fatalf("body %q ok %v", body, ok)
	}
	if _, ok := heredocBody("nft list ruleset"); ok {
		t.Fatal("not a here-document")
	}
}
