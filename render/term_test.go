package render

import (
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestVisibleWidth(t *testing.T) {
	for s, want := range map[string]int{
		"":                            0,
		"Table":                       5,
		"\x1b[1mTable\x1b[0m":         5,
		"\x1b[1;31m CRITICAL \x1b[0m": 10,
		"[██████████▌   ]":            16, // block elements: one column each, three bytes each
		"▏▎▍▌▋▊▉":                     7,
		"● WARNING":                   9,
		"—":                           1,
		"表":                           2, // East Asian wide
		"ｆｕｌｌ":                        8, // fullwidth
		"e\u0301":                     1, // combining acute accent
		"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\": 4, // OSC 8 hyperlink
		"a\x1b": 1, // a lone ESC at the end
	} {
		if got := VisibleWidth(s); got != want {
			t.Errorf("VisibleWidth(%q) = %d, want %d", s, got, want)
		}
	}
	if got := StripANSI("\x1b[1;33mdrop 5\x1b[0m · x"); got != "drop 5 · x" {
		t.Errorf("StripANSI = %q", got)
	}
}

func TestPadTruncate(t *testing.T) {
	if got := Pad("\x1b[1mTable\x1b[0m", 10); StripANSI(got) != "Table     " {
		t.Errorf("Pad counts escape codes: %q", got)
	}
	if got := Pad("▌▌", 4); got != "▌▌  " {
		t.Errorf("Pad counts bytes: %q", got)
	}
	for _, tc := range []struct{ in, end, middle string }{
		{"short", "short", "short"},
		{"2001:db8:85a3:1234:5678:8a2e:0:7334", "2001:db8:85…", "2001:d…:7334"},
		{"ünïcödé-näme-x", "ünïcödé-näm…", "ünïcöd…äme-x"},
	} {
		if got := Truncate(tc.in, 12); got != tc.end || VisibleWidth(got) > 12 {
			t.Errorf("Truncate(%q, 12) = %q, want %q", tc.in, got, tc.end)
		}
		if got := TruncateMiddle(tc.in, 12); got != tc.middle || VisibleWidth(got) > 12 {
			t.Errorf("TruncateMiddle(%q, 12) = %q, want %q", tc.in, got, tc.middle)
		}
	}
}

// Piped output (not a terminal) follows $COLUMNS, else 100.
func TestWidthFromColumns(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for env, want := range map[string]int{"80": 80, " 132 ": 132, "": DefaultWidth, "wide": DefaultWidth, "0": DefaultWidth, "-5": DefaultWidth} {
		if got := width(w, func(k string) string { return map[string]string{"COLUMNS": env}[k] }); got != want {
			t.Errorf("COLUMNS=%q: width %d, want %d", env, got, want)
		}
	}
	t.Setenv("COLUMNS", "80")
	if got := Width(&strings.Builder{}); got != 80 {
		t.Errorf("Width with COLUMNS=80 = %d", got)
	}
}

func TestShellCommand(t *testing.T) {
	for _, tc := range []struct {
		in      string
		argv    []string
		comment string
		ok      bool
	}{
		{"sysctl -w a=1   # costs 1 MiB", []string{"sysctl", "-w", "a=1"}, "costs 1 MiB", true},
		{"echo 'a = 1 # not a comment' >> f", []string{"echo", "'a = 1 # not a comment'", ">>", "f"}, "", true},
		{`echo "x \" # y" a#b`, []string{"echo", `"x \" # y"`, "a#b"}, "", true},
		{`echo a\ b c`, []string{"echo", `a\ b`, "c"}, "", true},
		{"nft add chain t c '{ type filter hook output priority raw; }'", []string{"nft", "add", "chain", "t", "c", "'{ type filter hook output priority raw; }'"}, "", true},
		{"echo 'unterminated", nil, "", false},
		{`echo trailing\`, nil, "", false},
	} {
		argv, comment, ok := shellCommand(tc.in)
		if ok != tc.ok || comment != tc.comment || strings.Join(argv, "|") != strings.Join(tc.argv, "|") {
			t.Errorf("shellCommand(%q) = %q, %q, %v; want %q, %q, %v", tc.in, argv, comment, ok, tc.argv, tc.comment, tc.ok)
		}
	}
	if isCommandName("conntrack:") || !isCommandName("iptables") || !isCommandName("/usr/sbin/nft") {
		t.Error("isCommandName")
	}
}

func TestWordsKeepQuotedPhrases(t *testing.T) {
	got := words("persist with 'options nf_conntrack hashsize=65536' in /etc/modprobe.d, the kernel's way", 60)
	want := []string{"persist", "with", "'options nf_conntrack hashsize=65536'", "in", "/etc/modprobe.d,", "the", "kernel's", "way"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("words = %q", got)
	}
	if got := words("abcdefghij", 4); strings.Join(got, "|") != "abcd|efgh|ij" {
		t.Errorf("a word wider than the line is cut: %q", got)
	}
}

// Names in the report (namespaces, hosts) come from the system: whatever
// they hold, widths are consistent and truncation fits.
func FuzzVisibleWidth(f *testing.F) {
	for _, s := range []string{"", "\x1b[1mTable\x1b[0m", "表ｆ e\u0301", "\x1b]8;;x\x1b\\y", "\x1b", "\xff\xfe", "▏▎▍"} {
		f.Add(s, 10)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		n = n % 200
		w := VisibleWidth(s)
		if w < 0 || w > utf8.RuneCountInString(s)*2 {
			t.Fatalf("VisibleWidth(%q) = %d", s, w)
		}
		plain := StripANSI(s)
		// (Invalid UTF-8 on both sides of an escape may join into a valid rune.)
		if utf8.ValidString(s) && VisibleWidth(plain) != w {
			t.Fatalf("StripANSI changed the width of %q: %d → %d", s, w, VisibleWidth(plain))
		}
		if p := Pad(plain, n); VisibleWidth(p) != max(VisibleWidth(plain), n) {
			t.Fatalf("Pad(%q, %d) is %d wide", plain, n, VisibleWidth(p))
		}
		if n > 0 {
			if tr := Truncate(plain, n); VisibleWidth(tr) > n {
				t.Fatalf("Truncate(%q, %d) = %q", plain, n, tr)
			}
			if tr := TruncateMiddle(plain, n); VisibleWidth(tr) > n {
				t.Fatalf("TruncateMiddle(%q, %d) = %q", plain, n, tr)
			}
		}
	})
}
