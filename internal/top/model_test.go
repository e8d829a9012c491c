package top

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/watch"
)

// key makes the key press a terminal sends for a key's name.
func key(name string) tea.KeyPressMsg {
	switch name {
	case "enter":
		return tea.KeyPressMsg{Code: tea.KeyEnter}
	case "esc":
		return tea.KeyPressMsg{Code: tea.KeyEscape}
	case "up":
		return tea.KeyPressMsg{Code: tea.KeyUp}
	case "down":
		return tea.KeyPressMsg{Code: tea.KeyDown}
	case "tab":
		return tea.KeyPressMsg{Code: tea.KeyTab}
	case "shift+tab":
		return tea.KeyPressMsg{Code: tea.KeyTab, Mod: tea.ModShift}
	case "backspace":
		return tea.KeyPressMsg{Code: tea.KeyBackspace}
	case "home":
		return tea.KeyPressMsg{Code: tea.KeyHome}
	case "ctrl+c":
		return tea.KeyPressMsg{Code: 'c', Mod: tea.ModCtrl}
	}
	return tea.KeyPressMsg{Code: []rune(name)[0], Text: name}
}

// The key presses the tests send are the ones the model matches on.
func TestKeyNames(t *testing.T) {
	for _, name := range []string{"enter", "esc", "up", "down", "tab", "shift+tab", "backspace", "home", "ctrl+c", "q", "?", "/", "s"} {
		if got := key(name).String(); got != name {
			t.Errorf("key(%q).String() = %q", name, got)
		}
	}
}

// sized makes a model over src at w×h.
func sized(src watch.Source, w, h int, c Colors) *Model {
	m := NewModel(src, Options{Colors: c, Now: func() time.Time { return t0 }})
	m.Update(tea.WindowSizeMsg{Width: w, Height: h})
	return m
}

// press sends keys to the model and returns the last command.
func press(m *Model, keys ...string) tea.Cmd {
	var cmd tea.Cmd
	for _, k := range keys {
		_, cmd = m.Update(key(k))
	}
	return cmd
}

// screen is what the terminal shows: the model's view without escapes.
func screen(m *Model) string { return ansi.Strip(m.View().Content) }

// fits fails the test when a line of s is wider than w columns (measured
// the way lipgloss and a terminal do) or s has more than h lines.
func fits(t *testing.T, what, s string, w, h int) {
	t.Helper()
	lines := strings.Split(s, "\n")
	if h > 0 && len(lines) > h {
		t.Errorf("%s: %d lines, the terminal has %d:\n%s", what, len(lines), h, ansi.Strip(s))
	}
	for i, l := range lines {
		if lw, aw := lipgloss.Width(l), ansi.StringWidth(l); lw > w || aw > w {
			t.Errorf("%s: line %d is %d columns (ansi %d), the terminal has %d: %q", what, i+1, lw, aw, w, ansi.Strip(l))
		}
	}
}

// Every screen fits the terminal at 80×24 and at other sizes from the
// smallest supported up: no line wider than the terminal, no more lines
// than it has, and the dashboard shows every section.
func TestLayoutFits(t *testing.T) {
	frames := map[string]func() watch.Frame{
		"busy": func() watch.Frame { return busyFrame("demo") },
		"starting": func() watch.Frame {
			return watch.Frame{NetNS: "demo", Time: t0, NewPerSec: -1, DropPerSec: -1, EarlyDropPerSec: -1, InsertFailedPerSec: -1, TimeToFull: -1}
		},
		"error": func() watch.Frame {
			f := busyFrame("demo")
			f.Err = "list the table: operation not permitted: ctdoctor needs CAP_NET_ADMIN (run it as root) " + strings.Repeat("and more words ", 20)
			return f
		},
		"gone polling": func() watch.Frame {
			f := busyFrame("a-namespace-with-a-rather-long-name-that-goes-on-and-on")
			f.Gone, f.Mode = true, watch.ModePolling
			f.ModeReason = "events lost (ENOBUFS) at 06:30:01, polling until 06:31:01 " + strings.Repeat("x", 100)
			f.Count, f.Max, f.Usage, f.TimeToFull = 1234567, 1234567, 1, 0
			return f
		},
	}
	sizes := [][2]int{{80, 24}, {MinWidth, MinHeight}, {61, 17}, {79, 23}, {100, 30}, {132, 43}, {200, 60}, {80, 50}, {250, 16}}
	for name, mk := range frames {
		for _, sz := range sizes {
			for _, c := range []Colors{Plain, Mono, Color} {
				src := newFake(mk(), busyFrame("second"))
				m := sized(src, sz[0], sz[1], c)
				what := fmt.Sprintf("%s %dx%d colors %d", name, sz[0], sz[1], c)
				fits(t, what+" dashboard", m.View().Content, sz[0], sz[1])
				press(m, "/", "1", "0", ".", "enter")
				fits(t, what+" filtered", m.View().Content, sz[0], sz[1])
				press(m, "esc", "?")
				fits(t, what+" help", m.View().Content, sz[0], sz[1])
				press(m, "?", "f")
				fits(t, what+" findings", m.View().Content, sz[0], sz[1])
				press(m, "down", "enter")
				fits(t, what+" fix", m.View().Content, sz[0], sz[1])
				press(m, "down", "down", "down")
				fits(t, what+" fix scrolled", m.View().Content, sz[0], sz[1])
			}
		}
	}

	// At 80×24 the dashboard shows every section of the busy frame.
	m := sized(newFake(busyFrame("demo")), 80, 24, Color)
	s := screen(m)
	for _, want := range []string{"ctdoctor top · netns demo · events", "WARNING", "local ports running out",
		"Table  [", "20%", "53,232 / 262,144", "full in 3m12s", "new 6,917/s", "drop 0/s", "insert failed 0.5/s",
		"Usage", "Drops", "By TCP state", "By protocol", "Top services", "Top sources", "Top destinations",
		"TIME_WAIT", "38,123", "tcp", "48,259", "+317",
		"Kernel log", "85 table-full lines (2 records)", "Findings (4)", "local-ports-exhausted", "q quit"} {
		if !strings.Contains(s, want) {
			t.Errorf("80x24 dashboard lacks %q:\n%s", want, s)
		}
	}
	if n := len(strings.Split(s, "\n")); n != 24 {
		t.Errorf("80x24 dashboard: %d lines, want the whole screen (24):\n%s", n, s)
	}
}

// A terminal below the minimum gets a message saying so (with the size it
// needs), never a broken layout or a panic; growing it brings the screen.
func TestTooSmall(t *testing.T) {
	for _, sz := range [][2]int{{MinWidth - 1, 24}, {80, MinHeight - 1}, {30, 10}, {10, 3}, {1, 1}} {
		m := sized(newFake(busyFrame("demo")), sz[0], sz[1], Color)
		s := m.View().Content
		fits(t, fmt.Sprintf("%dx%d", sz[0], sz[1]), s, sz[0], sz[1])
		if sz[0] >= 30 && (!strings.Contains(s, "Terminal too small") || !strings.Contains(s, fmt.Sprintf("at least %d×%d", MinWidth, MinHeight))) {
			t.Errorf("%dx%d: %q, want the too-small message with the size needed", sz[0], sz[1], s)
		}
		if cmd := press(m, "q"); cmd == nil || !isQuit(cmd) {
			t.Errorf("%dx%d: q does not quit", sz[0], sz[1])
		}
		m = sized(newFake(busyFrame("demo")), sz[0], sz[1], Color)
		m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
		if s := screen(m); !strings.Contains(s, "By TCP state") {
			t.Errorf("resized from %dx%d to 80x24: no dashboard:\n%s", sz[0], sz[1], s)
		}
	}
}

func isQuit(cmd tea.Cmd) bool {
	_, ok := cmd().(tea.QuitMsg)
	return ok
}

// section returns the lines of the table titled title, as drawn in its
// column of the screen: the rows' keys, in order.
func tableKeys(t *testing.T, s, title string) []string {
	t.Helper()
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		col := strings.Index(l, title)
		if col < 0 {
			continue
		}
		var keys []string
		for _, r := range lines[i+1:] {
			rr := []rune(r)
			c := len([]rune(l[:col]))
			if c >= len(rr) || rr[c] == ' ' {
				break
			}
			f := strings.Fields(string(rr[c:]))
			if len(f) < 2 || !regexp.MustCompile(`^[0-9,]+$`).MatchString(f[1]) {
				break
			}
			keys = append(keys, f[0])
		}
		return keys
	}
	t.Fatalf("no table %q on screen:\n%s", title, s)
	return nil
}

// The keys: help, sort, filter, namespace switch, findings and their
// fixes, quit.
func TestKeys(t *testing.T) {
	src := newFake(busyFrame("demo"), busyFrame("web2"))
	m := sized(src, 100, 40, Plain)

	// ? opens the help and closes it.
	press(m, "?")
	if s := screen(m); !strings.Contains(s, "Keys") || !strings.Contains(s, "sort the tables") {
		t.Errorf("? shows no help:\n%s", s)
	}
	press(m, "?")
	if s := screen(m); !strings.Contains(s, "By TCP state") {
		t.Errorf("? again does not return to the dashboard:\n%s", s)
	}

	// s sorts: by entries, then change, then name, then entries again.
	byEntries := tableKeys(t, screen(m), "By TCP state")
	if want := []string{"TIME_WAIT", "ESTABLISHED", "SYN_SENT", "CLOSE", "CLOSE_WAIT", "SYN_RECV", "FIN_WAIT", "LAST_ACK"}; !reflect.DeepEqual(byEntries, want) {
		t.Errorf("by entries: %v, want %v", byEntries, want)
	}
	press(m, "s")
	// Deltas by rows(): i%3-1 times (i+1)*7: TIME_WAIT -7, ESTABLISHED 0,
	// SYN_SENT +21, CLOSE -28, CLOSE_WAIT 0, SYN_RECV +42, FIN_WAIT -49, LAST_ACK 0.
	if got, want := tableKeys(t, screen(m), "By TCP state"), []string{"FIN_WAIT", "SYN_RECV", "CLOSE", "SYN_SENT", "TIME_WAIT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK"}; !reflect.DeepEqual(got, want) {
		t.Errorf("by change: %v, want %v", got, want)
	}
	if s := screen(m); !strings.Contains(s, "sorted by change") {
		t.Errorf("s says nothing:\n%s", s)
	}
	press(m, "s")
	if got, want := tableKeys(t, screen(m), "By TCP state"), []string{"CLOSE", "CLOSE_WAIT", "ESTABLISHED", "FIN_WAIT", "LAST_ACK", "SYN_RECV", "SYN_SENT", "TIME_WAIT"}; !reflect.DeepEqual(got, want) {
		t.Errorf("by name: %v, want %v", got, want)
	}
	press(m, "s")
	if got := tableKeys(t, screen(m), "By TCP state"); !reflect.DeepEqual(got, byEntries) {
		t.Errorf("s a third time: %v, want by entries again", got)
	}

	// / filters every table's rows, live as it is typed; enter keeps it,
	// esc clears it.
	press(m, "/", "1", "0", ".", "1", ".")
	s := screen(m)
	if got := tableKeys(t, s, "Top sources"); !reflect.DeepEqual(got, []string{"10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6", "10.1.0.7", "10.1.0.8", "10.1.0.9", "10.1.0.10"}) {
		t.Errorf("filter 10.1.: top sources %v", got)
	}
	if !strings.Contains(s, "Top destinations (0/11)") || !strings.Contains(s, "(no match)") || !strings.Contains(s, "filter: 10.1.") {
		t.Errorf("filter 10.1.: destinations not emptied, or the filter not shown:\n%s", s)
	}
	press(m, "backspace", "enter")
	if got := tableKeys(t, screen(m), "Top sources"); len(got) != 10 {
		t.Errorf("filter 10.1 after a backspace: %v", got)
	}
	if got := tableKeys(t, screen(m), "Top destinations"); len(got) != 0 {
		t.Errorf("filter 10.1: destinations %v, want none (10.200.…)", got)
	}
	if s := screen(m); !strings.Contains(s, "filter:10.1") {
		t.Errorf("the kept filter is not shown:\n%s", s)
	}
	press(m, "esc")
	if got := tableKeys(t, screen(m), "Top destinations"); len(got) != 11 {
		t.Errorf("esc: destinations %v, want all 11 again (10 and other)", got)
	}

	// n and p (and tab, shift+tab) switch namespace.
	if m.Namespace() != "demo" || !strings.Contains(screen(m), "netns demo (1/2)") {
		t.Fatalf("starts on %s:\n%s", m.Namespace(), screen(m))
	}
	press(m, "n")
	if m.Namespace() != "web2" || !strings.Contains(screen(m), "netns web2 (2/2)") {
		t.Errorf("n: on %s", m.Namespace())
	}
	press(m, "n")
	if m.Namespace() != "demo" {
		t.Errorf("n wraps around: on %s", m.Namespace())
	}
	press(m, "shift+tab")
	if m.Namespace() != "web2" {
		t.Errorf("shift+tab: on %s", m.Namespace())
	}
	press(m, "p")
	if m.Namespace() != "demo" {
		t.Errorf("p: on %s", m.Namespace())
	}

	// f lists the findings; ↓ selects the next; enter shows its fix; esc
	// goes back to the list, then to the dashboard.
	press(m, "f")
	s = screen(m)
	if !strings.Contains(s, "▶ WARNING  local-ports-exhausted") || !strings.Contains(s, "enter shows the fix") {
		t.Errorf("f: the first finding is not selected:\n%s", s)
	}
	press(m, "down", "enter")
	s = screen(m)
	if !strings.Contains(s, "▶ WARNING  loopback-tracked") || !strings.Contains(s, "Fix for loopback-tracked:") ||
		!strings.Contains(s, "$ ip netns exec demo nft") || !strings.Contains(s, "# stop tracking loopback traffic") {
		t.Errorf("down, enter: not the second finding's fix:\n%s", s)
	}
	if strings.Contains(s, "ip_local_port_range") {
		t.Errorf("the fix of the first finding is shown with the second's:\n%s", s)
	}
	press(m, "esc")
	if s := screen(m); strings.Contains(s, "Fix for") || !strings.Contains(s, "Findings (4)") {
		t.Errorf("esc: not back to the list:\n%s", s)
	}
	press(m, "esc")
	if s := screen(m); !strings.Contains(s, "By TCP state") {
		t.Errorf("esc again: not back to the dashboard:\n%s", s)
	}

	// p in the findings quits and prints the selected fix, unwrapped.
	press(m, "f", "home", "down")
	if cmd := press(m, "p"); cmd == nil || !isQuit(cmd) {
		t.Errorf("p in the findings does not quit")
	}
	fd := src.frames["demo"].Report.Findings[1]
	if got, want := m.Printed(), append([]string{"# loopback-tracked (netns demo): " + fd.Summary}, fd.Fixes...); !reflect.DeepEqual(got, want) {
		t.Errorf("p printed %q, want %q", got, want)
	}
	m = sized(src, 100, 40, Plain)

	// q and ctrl+c quit; q typed into the filter does not.
	press(m, "/")
	if cmd := press(m, "q"); cmd != nil {
		t.Errorf("q in the filter quits")
	}
	press(m, "esc")
	if cmd := press(m, "q"); cmd == nil || !isQuit(cmd) {
		t.Errorf("q does not quit")
	}
	m = sized(src, 80, 24, Plain)
	if cmd := press(m, "ctrl+c"); cmd == nil || !isQuit(cmd) {
		t.Errorf("ctrl+c does not quit")
	}
}

// Without a diagnosis yet the verdict says "diagnosing…" and f says why
// it has nothing to show.
func TestDiagnosing(t *testing.T) {
	f := busyFrame("demo")
	f.Report = nil
	src := newFake(f)
	m := sized(src, 80, 24, Plain)
	s := screen(m)
	if !strings.Contains(s, "diagnosing…") || !strings.Contains(s, "waiting for the first diagnosis") {
		t.Errorf("no report: %s", s)
	}
	press(m, "f")
	if s := screen(m); !strings.Contains(s, "the first diagnosis has not finished") || !strings.Contains(s, "By TCP state") {
		t.Errorf("f without a report:\n%s", s)
	}
	// The diagnosis arrives at the next refresh.
	f.Time = f.Time.Add(time.Second)
	f.Report = busyFrame("demo").Report
	src.set(f)
	m.Update(tickMsg(t0))
	if s := screen(m); !strings.Contains(s, "local ports running out") {
		t.Errorf("the verdict did not arrive:\n%s", s)
	}
}

// A refresh shows the source's new frame: counts, changes and the
// sparklines' history follow it.
func TestRefresh(t *testing.T) {
	f := busyFrame("demo")
	src := newFake(f)
	m := sized(src, 80, 24, Plain)
	for i := 1; i <= 5; i++ {
		f.Time = t0.Add(time.Duration(i) * time.Second)
		f.Count += 1000
		f.Usage = float64(f.Count) / float64(f.Max)
		f.ByProto[0].Entries += 1000
		f.ByProto[0].Delta = 1000
		f.DropPerSec = float64(i)
		src.set(f)
		m.Update(tickMsg(f.Time))
	}
	s := screen(m)
	if !strings.Contains(s, "58,232 / 262,144") || !strings.Contains(s, "53,259 +1,000") || !strings.Contains(s, "peak 5.0/s") {
		t.Errorf("after 5 refreshes:\n%s", s)
	}
	if h := m.hist["demo"]; len(h.usage.values()) != 6 || len(h.drops.values()) != 6 {
		t.Errorf("history: %d usage and %d drops samples, want 6 (the first frame and 5 new ones)", len(h.usage.values()), len(h.drops.values()))
	}
	// A tick with no new frame adds no sample.
	m.Update(tickMsg(t0))
	if h := m.hist["demo"]; len(h.usage.values()) != 6 {
		t.Errorf("a tick without a new frame added a sample: %d", len(h.usage.values()))
	}
}

// The session's history stays bounded and covers the whole session: past
// maxHistory samples, pairs merge by their maximum.
func TestSeriesBounded(t *testing.T) {
	var s series
	n := 10 * maxHistory
	for i := range n {
		v := 0.0
		if i == 3 {
			v = 99 // an early spike survives the merges
		}
		s.add(v)
	}
	vals := s.values()
	if len(vals) > maxHistory || len(vals) < maxHistory/4 {
		t.Errorf("%d samples kept of %d, want between %d and %d", len(vals), n, maxHistory/4, maxHistory)
	}
	if vals[0] != 99 {
		t.Errorf("the early spike was lost: first sample %v", vals[0])
	}
	if covered := len(s.v)*s.stride + s.pending; covered != n {
		t.Errorf("the samples cover %d refreshes, want %d", covered, n)
	}
}

// A namespace that is deleted while watched shows as gone: from the
// source's Gone flag, and when the source stops listing it.
func TestGone(t *testing.T) {
	f := busyFrame("demo")
	src := newFake(f, busyFrame("other"))
	m := sized(src, 80, 24, Plain)
	f.Gone, f.Time = true, t0.Add(time.Second)
	src.set(f)
	m.Update(tickMsg(t0))
	s := screen(m)
	if !strings.Contains(s, "GONE") || !strings.Contains(s, "was deleted while watched") || !strings.Contains(s, "53,232") {
		t.Errorf("gone frame:\n%s", s)
	}

	// The source drops it (--all-netns discovery): it stays on screen,
	// marked gone, until the user switches away.
	src.drop("demo")
	m.Update(tickMsg(t0))
	s = screen(m)
	if m.Namespace() != "demo" || !strings.Contains(s, "GONE") || !strings.Contains(s, "(1/2)") {
		t.Errorf("dropped namespace: on %s:\n%s", m.Namespace(), s)
	}
	press(m, "n")
	if m.Namespace() != "other" {
		t.Errorf("n from the gone namespace: on %s", m.Namespace())
	}
	m.Update(tickMsg(t0))
	if s := screen(m); strings.Contains(s, "GONE") || strings.Contains(s, "(1/2)") {
		t.Errorf("the gone namespace is still listed once left:\n%s", s)
	}
}

// A frame that could not be read shows its error instead of the tables.
func TestErrorFrame(t *testing.T) {
	f := watch.Frame{NetNS: "demo", Time: t0, Err: "list the table: operation not permitted (CAP_NET_ADMIN needed: run as root)",
		NewPerSec: -1, DropPerSec: -1, EarlyDropPerSec: -1, InsertFailedPerSec: -1, TimeToFull: -1}
	m := sized(newFake(f), 80, 24, Plain)
	s := screen(m)
	if !strings.Contains(s, "ERROR") || !strings.Contains(s, "operation not permitted") || strings.Contains(s, "By TCP state") {
		t.Errorf("error frame:\n%s", s)
	}
	if !strings.Contains(s, "new —/s") {
		t.Errorf("unknown rates are not shown as unknown:\n%s", s)
	}
}

// The mode and its reason are on screen.
func TestMode(t *testing.T) {
	f := busyFrame("demo")
	f.Mode, f.ModeReason = watch.ModePolling, "events lost (ENOBUFS) at 06:30:01, polling until 06:31:01"
	s := screen(sized(newFake(f), 80, 24, Plain))
	if !strings.Contains(s, "· polling ·") || !strings.Contains(s, "Mode   polling: events lost (ENOBUFS) at 06:30:01") {
		t.Errorf("polling mode:\n%s", s)
	}
	f = busyFrame("demo")
	if s := screen(sized(newFake(f), 80, 24, Plain)); !strings.Contains(s, "· events ·") || strings.Contains(s, "Mode ") {
		t.Errorf("events mode:\n%s", s)
	}
}

// The layout adapts to the width: more tables side by side on a wider
// terminal, more rows on a taller one.
func TestResizeAdapts(t *testing.T) {
	m := sized(newFake(busyFrame("demo")), 80, 24, Plain)
	perLine := func() int {
		for _, l := range strings.Split(screen(m), "\n") {
			if strings.Contains(l, "By TCP state") {
				return strings.Count(l, "By ") + strings.Count(l, "Top ")
			}
		}
		return 0
	}
	rowsShown := func() int { return len(tableKeys(t, screen(m), "Top sources")) }
	if n := perLine(); n != 3 {
		t.Errorf("80 columns: %d tables in the first row, want 3:\n%s", n, screen(m))
	}
	narrow := rowsShown()
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 24})
	if n := perLine(); n != 5 {
		t.Errorf("160 columns: %d tables in the first row, want 5:\n%s", n, screen(m))
	}
	m.Update(tea.WindowSizeMsg{Width: 60, Height: 24})
	if n := perLine(); n != 2 {
		t.Errorf("60 columns: %d tables in the first row, want 2:\n%s", n, screen(m))
	}
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 50})
	if tall := rowsShown(); tall <= narrow || tall != 11 {
		t.Errorf("80x50: %d source rows, 80x24: %d; want all 11 (10 and other) on the taller screen", tall, narrow)
	}
}

// --once text: plain (no escape sequence at all), every row, every line
// within the width.
func TestOncePlain(t *testing.T) {
	var b bytes.Buffer
	src := newFake(busyFrame("demo"))
	if err := Once(context.Background(), src, &b, OnceOptions{Width: 80, Colors: Plain, Wait: time.Second}); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	if strings.Contains(s, "\x1b") {
		t.Errorf("plain output has escape sequences: %q", s)
	}
	fits(t, "once", s, 80, 0)
	for _, want := range []string{"ctdoctor top · netns demo · events", "local ports running out", "10.200.0.10:8089/tcp", "other",
		"Findings (4)", "established-timeout-long"} {
		if !strings.Contains(s, want) {
			t.Errorf("--once lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "q quit") || strings.Contains(s, "press f") {
		t.Errorf("--once shows keys:\n%s", s)
	}
	// The verdict is wrapped, not cut.
	if !strings.Contains(s, "takes the even half first") {
		t.Errorf("the verdict is cut:\n%s", s)
	}

	// With colour the same text, with escapes.
	var c bytes.Buffer
	if err := Once(context.Background(), src, &c, OnceOptions{Width: 80, Colors: Color, Wait: time.Second}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.String(), "\x1b[") {
		t.Errorf("colour output has no escape sequence")
	}
	if got := trimLines(ansi.Strip(c.String())); got != trimLines(s) {
		t.Errorf("colour and plain text differ:\n%s\n---\n%s", got, s)
	}
}

func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// --once waits for complete frames (rates and the diagnosis), and prints
// what it has when the wait runs out.
func TestOnceWaits(t *testing.T) {
	f := busyFrame("demo")
	f.Report, f.NewPerSec = nil, -1
	src := newFake(f)
	go func() {
		time.Sleep(300 * time.Millisecond)
		g := busyFrame("demo")
		g.Count = 777
		src.set(g)
	}()
	var b bytes.Buffer
	start := time.Now()
	if err := Once(context.Background(), src, &b, OnceOptions{Width: 80, Wait: time.Minute, Poll: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "777 / 262,144") {
		t.Errorf("--once did not wait for the complete frame:\n%s", b.String())
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("--once waited the whole minute for a frame that was complete")
	}

	// Never complete: printed as is after the wait.
	src = newFake(f)
	b.Reset()
	if err := Once(context.Background(), src, &b, OnceOptions{Width: 80, Wait: 200 * time.Millisecond, Poll: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "diagnosing…") || !strings.Contains(b.String(), "new —/s") {
		t.Errorf("incomplete frame:\n%s", b.String())
	}

	// Nothing at all: an error.
	err := Once(context.Background(), newFake(), io.Discard, OnceOptions{Wait: 50 * time.Millisecond, Poll: 10 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "no frame") {
		t.Errorf("no namespace: %v", err)
	}
}

// -o json: one watch.Frame object per namespace, the source's frames.
func TestOnceJSON(t *testing.T) {
	a, b := busyFrame("demo"), busyFrame("web2")
	b.Count = 42
	var out bytes.Buffer
	if err := Once(context.Background(), newFake(a, b), &out, OnceOptions{JSON: true, Wait: time.Second}); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(&out)
	for _, want := range []watch.Frame{a, b} {
		var got watch.Frame
		if err := dec.Decode(&got); err != nil {
			t.Fatal(err)
		}
		want.Report = nil // not part of the frame's JSON
		if !reflect.DeepEqual(got, want) {
			t.Errorf("JSON frame:\n%+v\nwant\n%+v", got, want)
		}
	}
	if dec.More() {
		t.Errorf("more than one object per namespace")
	}
}

// A fix's command wraps between words with a shell continuation: joined
// back it is the command; no line is wider than the width; quotes are
// never split.
func TestShellLines(t *testing.T) {
	cmd := busyFrame("demo").Report.Findings[1].Fixes[1]
	for _, w := range []int{40, 60, 80, 200} {
		lines := shellLines(cmd, w, "$ ", "    ")
		var joined string
		for i, l := range lines {
			if render := ansi.StringWidth(l); render > w {
				t.Errorf("width %d: line %d is %d wide: %q", w, i, render, l)
			}
			if i == 0 && !strings.HasPrefix(l, "$ ") || i > 0 && !strings.HasPrefix(l, "    ") {
				t.Errorf("width %d: line %d: %q, want \"$ \" first and 4 spaces after", w, i, l)
			}
			l = l[map[bool]int{true: 2, false: 4}[i == 0]:]
			// A line ended by " \" continues with the next word; one
			// without was cut inside a word too wide for any line.
			if cont, ok := strings.CutSuffix(l, " \\"); ok {
				joined += cont + " "
			} else {
				joined += l
			}
		}
		if joined != cmd {
			t.Errorf("width %d: joined back:\n%s\nwant\n%s", w, joined, cmd)
		}
	}
	// Words are never cut while they fit a line.
	if lines := shellLines("ip netns exec demo sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=30", 60, "$ ", "    "); len(lines) != 2 ||
		lines[0] != "$ ip netns exec demo sysctl -w \\" || lines[1] != "    net.netfilter.nf_conntrack_tcp_timeout_time_wait=30" {
		t.Errorf("sysctl at 60: %q", lines)
	}
	if got := shellWords(`a 'b c' "d \" e" f\ g`); !reflect.DeepEqual(got, []string{"a", "'b c'", `"d \" e"`, `f\ g`}) {
		t.Errorf("shellWords: %q", got)
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{num(0), "0"}, {num(999), "999"}, {num(1000), "1,000"}, {num(262144), "262,144"}, {num(-1234567), "-1,234,567"},
		{delta(0), ""}, {delta(12), "+12"}, {delta(-1500), "-1,500"},
		{rate(-1), "—"}, {rate(0), "0"}, {rate(0.25), "0.2"}, {rate(9.96), "10.0"}, {rate(6917.4), "6,917"},
		{pct(0), "0%"}, {pct(0.004), "<1%"}, {pct(0.2031), "20%"}, {pct(0.996), ">99%"}, {pct(1), "100%"}, {pct(2.18), "218%"},
		{timeToFull(-1, 100), "not filling up"}, {timeToFull(0, 100), "FULL now"}, {timeToFull(time.Minute, 0), "limit unknown"},
		{shortDuration(45 * time.Second), "45s"}, {shortDuration(192 * time.Second), "3m12s"},
		{shortDuration(2*time.Hour + 5*time.Minute), "2h05m"}, {shortDuration(76 * time.Hour), "3d04h"}, {shortDuration(2000 * time.Hour), "83d08h"}, {shortDuration(3000 * time.Hour), ">99d"},
		{render.Bar(0.5, 4), "██  "}, {render.Bar(0.2, 10), "██        "}, {render.Bar(0.0625, 2), "▏ "}, {render.Bar(2, 3), "███"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	for _, w := range []int{1, 5, 17, 40} {
		for _, l := range wrapWords("averyveryverylongwordthatmustbecut and some short words after it", w, "> ", "  ") {
			if ansi.StringWidth(l) > max(w, 3) {
				t.Errorf("wrapWords at %d: %q", w, l)
			}
		}
	}
	if !regexp.MustCompile(`^ +▁▂▄█$`).MatchString(spark([]float64{1, 2, 4, 8}, 10, 0)) {
		t.Errorf("spark: %q, want the samples at the right", spark([]float64{1, 2, 4, 8}, 10, 0))
	}
}
