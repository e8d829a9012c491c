package render

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// The terminal kit: where text output goes, how wide it may be and whether
// it may be coloured is decided here, once, and passed down in TextOptions.

// DefaultWidth is the width text output assumes when neither the terminal
// nor $COLUMNS says otherwise.
const DefaultWidth = 100

// MinWidth is the narrowest layout Text produces: a smaller width is
// treated as this one.
const MinWidth = 40

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Width returns the width text written to w must fit: the terminal's when
// w is one, else $COLUMNS when it holds a positive number (piped output
// of a shell that exports it, or COLUMNS=80 set by hand), else
// DefaultWidth.
func Width(w io.Writer) int {
	return width(w, os.Getenv)
}

func width(w io.Writer, getenv func(string) string) int {
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	if n, err := strconv.Atoi(strings.TrimSpace(getenv("COLUMNS"))); err == nil && n > 0 {
		return n
	}
	return DefaultWidth
}

// Color decides on colour for output to w from a --color mode (auto,
// always or never) and the environment: in auto mode, colour is on for a
// terminal unless NO_COLOR is set or TERM is dumb.
func Color(mode string, w io.Writer) (bool, error) {
	switch strings.ToLower(mode) {
	case "always":
		return true, nil
	case "never":
		return false, nil
	case "", "auto":
		if _, ok := os.LookupEnv("NO_COLOR"); ok || os.Getenv("TERM") == "dumb" {
			return false, nil
		}
		return IsTerminal(w), nil
	}
	return false, fmt.Errorf("--color must be auto, always or never, not %q", mode)
}

// VisibleWidth is how many terminal columns s takes: ANSI escape
// sequences take none, combining marks none, East Asian wide and
// fullwidth characters two, everything else (the bar's block elements
// included) one.
func VisibleWidth(s string) int {
	n := 0
	for i := 0; i < len(s); {
		if s[i] == '\x1b' {
			i = skipEscape(s, i)
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		n += runeWidth(r)
		i += size
	}
	return n
}

// StripANSI removes ANSI escape sequences: what is left is what a
// terminal shows.
func StripANSI(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] == '\x1b' {
			i = skipEscape(s, i)
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// Pad appends spaces to s up to n visible columns.
func Pad(s string, n int) string {
	if w := VisibleWidth(s); w < n {
		return s + strings.Repeat(" ", n-w)
	}
	return s
}

// Truncate shortens s to at most n visible columns, ending it with "…"
// when something was cut. s must not hold escape sequences.
func Truncate(s string, n int) string {
	if VisibleWidth(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	var b strings.Builder
	w := 0
	for _, r := range s {
		rw := runeWidth(r)
		if w+rw > n-1 {
			break
		}
		b.WriteRune(r)
		w += rw
	}
	return b.String() + "…"
}

// TruncateMiddle shortens s to at most n visible columns by replacing
// its middle with "…": the end of an address (an IPv6 host part) tells
// rows apart better than its start. s must not hold escape sequences.
func TruncateMiddle(s string, n int) string {
	if VisibleWidth(s) <= n {
		return s
	}
	if n <= 2 {
		return Truncate(s, n)
	}
	rs := []rune(s)
	tail, w := 0, 0
	for i := len(rs) - 1; i >= 0; i-- {
		rw := runeWidth(rs[i])
		if w+rw > (n-1)/2 {
			break
		}
		tail, w = tail+1, w+rw
	}
	return Truncate(string(rs[:len(rs)-tail]), n-w) + string(rs[len(rs)-tail:])
}

// skipEscape returns the index after the escape sequence starting at s[i]:
// a CSI sequence (ESC [ parameters final-byte), an OSC string ended by BEL
// or ESC \, or ESC and one more character.
func skipEscape(s string, i int) int {
	i++ // ESC
	if i >= len(s) {
		return i
	}
	switch s[i] {
	case '[':
		for i++; i < len(s); i++ {
			if s[i] >= 0x40 && s[i] <= 0x7e {
				return i + 1
			}
		}
		return i
	case ']':
		for i++; i < len(s); i++ {
			if s[i] == '\a' {
				return i + 1
			}
			if s[i] == '\x1b' && i+1 < len(s) && s[i+1] == '\\' {
				return i + 2
			}
		}
		return i
	}
	_, size := utf8.DecodeRuneInString(s[i:])
	return i + size
}

// runeWidth is the number of columns a terminal gives r.
func runeWidth(r rune) int {
	switch {
	case r < 0x20 || r == 0x7f:
		return 0
	case r < 0x300:
		return 1
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf):
		return 0
	case isWide(r):
		return 2
	}
	return 1
}

// isWide reports the East Asian Wide and Fullwidth ranges (Unicode
// EastAsianWidth W and F) and the emoji blocks terminals draw two
// columns wide.
func isWide(r rune) bool {
	for _, rg := range wideRanges {
		if r < rg[0] {
			return false
		}
		if r <= rg[1] {
			return true
		}
	}
	return false
}

var wideRanges = [][2]rune{
	{0x1100, 0x115f}, {0x231a, 0x231b}, {0x2329, 0x232a}, {0x23e9, 0x23ec}, {0x23f0, 0x23f0},
	{0x23f3, 0x23f3}, {0x25fd, 0x25fe}, {0x2614, 0x2615}, {0x2648, 0x2653}, {0x267f, 0x267f},
	{0x2693, 0x2693}, {0x26a1, 0x26a1}, {0x26aa, 0x26ab}, {0x26bd, 0x26be}, {0x26c4, 0x26c5},
	{0x26ce, 0x26ce}, {0x26d4, 0x26d4}, {0x26ea, 0x26ea}, {0x26f2, 0x26f3}, {0x26f5, 0x26f5},
	{0x26fa, 0x26fa}, {0x26fd, 0x26fd}, {0x2705, 0x2705}, {0x270a, 0x270b}, {0x2728, 0x2728},
	{0x274c, 0x274c}, {0x274e, 0x274e}, {0x2753, 0x2755}, {0x2757, 0x2757}, {0x2795, 0x2797},
	{0x27b0, 0x27b0}, {0x27bf, 0x27bf}, {0x2b1b, 0x2b1c}, {0x2b50, 0x2b50}, {0x2b55, 0x2b55},
	{0x2e80, 0x303e}, {0x3041, 0x33ff}, {0x3400, 0x4dbf}, {0x4e00, 0x9fff}, {0xa000, 0xa4cf},
	{0xa960, 0xa97f}, {0xac00, 0xd7a3}, {0xf900, 0xfaff}, {0xfe10, 0xfe19}, {0xfe30, 0xfe6f},
	{0xff00, 0xff60}, {0xffe0, 0xffe6}, {0x16fe0, 0x16fe4}, {0x17000, 0x18cff}, {0x1b000, 0x1b2ff},
	{0x1f004, 0x1f004}, {0x1f0cf, 0x1f0cf}, {0x1f18e, 0x1f18e}, {0x1f191, 0x1f19a}, {0x1f200, 0x1f251},
	{0x1f300, 0x1f64f}, {0x1f680, 0x1f6ff}, {0x1f7e0, 0x1f7eb}, {0x1f90c, 0x1f9ff}, {0x1fa70, 0x1faff},
	{0x20000, 0x3fffd},
}
