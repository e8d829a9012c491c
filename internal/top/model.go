package top

import (
	"slices"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"

	"github.com/ctdoctor/ctdoctor/watch"
)

// Options configure the screen.
type Options struct {
	// Interval is the source's refresh interval (default 1 s): the screen
	// reads the source four times as often (at most every 250 ms), so
	// that a new frame shows within a quarter of it.
	Interval time.Duration
	Colors   Colors
	Sort     SortMode
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// screenKind is what the screen shows.
type screenKind int

const (
	dashboard screenKind = iota
	findingsScreen
	helpScreen
)

// Model is the bubbletea model of `ctdoctor top`.
type Model struct {
	src watch.Source
	o   Options
	st  styles

	width, height int

	labels  []string               // the namespaces shown, in order
	cur     string                 // the namespace on screen
	frames  map[string]watch.Frame // the latest frame of each
	prev    map[string]time.Time   // the time of the frame before the latest
	hist    map[string]*history
	unwatch map[string]bool // namespaces the source stopped watching

	sort    SortMode
	filter  string
	editing bool // typing a filter

	screen  screenKind
	sel     int  // the selected finding
	showFix bool // the selected finding's fix is open
	scroll  int  // the first line of the finding's details

	flash      string
	flashUntil time.Time
	quitting   bool
	// print is what to write on the terminal after the screen closes: a
	// fix to copy, unwrapped.
	print []string
}

// tickMsg asks the model to read the source again.
type tickMsg time.Time

// NewModel makes the screen's model over src and reads it once.
func NewModel(src watch.Source, o Options) *Model {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Model{src: src, o: o, st: newStyles(o.Colors), sort: o.Sort,
		frames: map[string]watch.Frame{}, prev: map[string]time.Time{}, hist: map[string]*history{}, unwatch: map[string]bool{}}
	m.refresh()
	return m
}

// Init starts the refresh ticks.
func (m *Model) Init() tea.Cmd { return m.tick() }

func (m *Model) tick() tea.Cmd {
	every := min(max(m.o.Interval/4, 50*time.Millisecond), 250*time.Millisecond)
	return tea.Tick(every, func(t time.Time) tea.Msg { return tickMsg(t) })
}

// refresh reads every watched namespace's latest frame and records the
// new ones in the session's history.
func (m *Model) refresh() {
	labels := m.src.Namespaces()
	for _, l := range labels {
		f, ok := m.src.Frame(l)
		if !ok {
			continue
		}
		old, seen := m.frames[l]
		if !seen || !f.Time.Equal(old.Time) {
			if seen {
				m.prev[l] = old.Time
			}
			h := m.hist[l]
			if h == nil {
				h = &history{}
				m.hist[l] = h
			}
			h.usage.add(max(f.Usage, 0))
			h.drops.add(max(f.DropPerSec, 0))
		}
		m.frames[l] = f
		delete(m.unwatch, l)
	}
	// A namespace the source no longer lists stays while it is on screen,
	// shown as gone.
	if m.cur != "" && !slices.Contains(labels, m.cur) {
		if _, ok := m.frames[m.cur]; ok {
			i := slices.Index(m.labels, m.cur)
			labels = slices.Insert(slices.Clone(labels), min(max(i, 0), len(labels)), m.cur)
			m.unwatch[m.cur] = true
		}
	}
	m.labels = labels
	if (m.cur == "" || !slices.Contains(m.labels, m.cur)) && len(m.labels) > 0 {
		m.cur = m.labels[0]
	}
}

// Frame returns the frame on screen (tests).
func (m *Model) Frame() (watch.Frame, bool) {
	f, ok := m.frames[m.cur]
	if ok && m.unwatch[m.cur] {
		f.Gone = true
	}
	return f, ok
}

// Namespace is the label of the namespace on screen.
func (m *Model) Namespace() string { return m.cur }

// Update handles a message: a key, a resize or a refresh tick.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tickMsg:
		m.refresh()
		if m.flash != "" && m.o.Now().After(m.flashUntil) {
			m.flash = ""
		}
		return m, m.tick()
	case tea.KeyPressMsg:
		return m, m.key(msg)
	}
	return m, nil
}

func (m *Model) say(s string) {
	m.flash, m.flashUntil = s, m.o.Now().Add(3*time.Second)
}

// key handles a key press.
func (m *Model) key(k tea.KeyPressMsg) tea.Cmd {
	key := k.String()
	m.flash = "" // a message stays until the next key
	if key == "ctrl+c" {
		m.quitting = true
		return tea.Quit
	}
	if m.editing {
		switch key {
		case "enter":
			m.editing = false
		case "esc":
			m.editing, m.filter = false, ""
		case "backspace":
			if r := []rune(m.filter); len(r) > 0 {
				m.filter = string(r[:len(r)-1])
			}
		case "ctrl+u":
			m.filter = ""
		default:
			if k.Text != "" && !strings.ContainsAny(k.Text, "\r\n\t") {
				m.filter += k.Text
			}
		}
		return nil
	}
	if key == "q" {
		m.quitting = true
		return tea.Quit
	}
	switch m.screen {
	case helpScreen:
		if key == "?" || key == "esc" || key == "h" || key == "enter" {
			m.screen = dashboard
		}
		return nil
	case findingsScreen:
		return m.findingsKey(key)
	}
	switch key {
	case "?", "h":
		m.screen = helpScreen
	case "s":
		m.sort = (m.sort + 1) % 3
		m.say("sorted by " + m.sort.String())
	case "/":
		m.editing = true
	case "esc":
		if m.filter != "" {
			m.filter = ""
			m.say("filter cleared")
		}
	case "n", "tab", "right", "l":
		m.switchNS(1)
	case "p", "shift+tab", "left":
		m.switchNS(-1)
	case "f", "enter":
		f, _ := m.Frame()
		if f.Report == nil {
			m.say("no findings yet: the first diagnosis has not finished")
			return nil
		}
		m.screen, m.showFix, m.scroll = findingsScreen, false, 0
		m.sel = min(m.sel, max(0, len(f.Report.Findings)-1))
	}
	return nil
}

func (m *Model) findingsKey(key string) tea.Cmd {
	f, _ := m.Frame()
	n := 0
	if f.Report != nil {
		n = len(f.Report.Findings)
	}
	switch key {
	case "esc", "backspace":
		if m.showFix {
			m.showFix, m.scroll = false, 0
		} else {
			m.screen = dashboard
		}
	case "f":
		m.screen = dashboard
	case "?":
		m.screen = helpScreen
	case "up", "k":
		if m.showFix {
			m.scroll = max(0, m.scroll-1)
		} else if m.sel > 0 {
			m.sel--
		}
	case "down", "j":
		if m.showFix {
			m.scroll++
		} else if m.sel < n-1 {
			m.sel++
		}
	case "pgup":
		m.scroll = max(0, m.scroll-10)
	case "pgdown", "space":
		m.scroll += 10
	case "home":
		m.sel, m.scroll = 0, 0
	case "end":
		m.sel = max(0, n-1)
	case "enter", "x":
		if n > 0 {
			m.showFix, m.scroll = !m.showFix, 0
		}
	case "p":
		if n > 0 {
			fd := f.Report.Findings[min(m.sel, n-1)]
			m.print = append([]string{"# " + fd.ID + " (netns " + f.NetNS + "): " + fd.Summary}, fd.Fixes...)
			m.quitting = true
			return tea.Quit
		}
	case "n", "tab", "right", "l":
		m.switchNS(1)
	case "shift+tab", "left":
		m.switchNS(-1)
	}
	return nil
}

// Printed is what the screen asked to print once it closed (a fix to
// copy), one line a string; nil when nothing.
func (m *Model) Printed() []string { return m.print }

// switchNS moves to the next (+1) or previous (-1) namespace.
func (m *Model) switchNS(step int) {
	if len(m.labels) < 2 {
		m.say("only one namespace is watched (--netns NAME more than once, or --all-netns, for more)")
		return
	}
	i := slices.Index(m.labels, m.cur)
	i = (i + step + len(m.labels)) % len(m.labels)
	m.cur = m.labels[i]
	m.sel, m.showFix, m.scroll = 0, false, 0
	m.say("netns " + m.cur)
}

// View draws the screen.
func (m *Model) View() tea.View {
	v := tea.NewView(m.Render())
	v.AltScreen = true
	v.WindowTitle = "ctdoctor top · netns " + m.cur
	return v
}

// Render draws the screen at the model's size.
func (m *Model) Render() string {
	if m.quitting {
		return ""
	}
	if m.width == 0 || m.height == 0 {
		return "ctdoctor top: starting…"
	}
	if m.width < MinWidth || m.height < MinHeight {
		return tooSmall(m.width, m.height)
	}
	f, ok := m.Frame()
	if !ok {
		f = watch.Frame{NetNS: m.cur, Time: m.o.Now(), TimeToFull: -1, NewPerSec: -1, DropPerSec: -1, EarlyDropPerSec: -1, InsertFailedPerSec: -1}
		if len(m.labels) == 0 {
			f.NetNS = "…"
		}
	}
	o := RenderOptions{Width: m.width, Height: m.height, Colors: m.o.Colors, Sort: m.sort, Filter: m.filter,
		NewSince: m.prev[m.cur], Now: m.o.Now()}
	if len(m.labels) > 1 {
		o.Position = itoa(slices.Index(m.labels, m.cur)+1) + "/" + itoa(len(m.labels))
	}
	if h := m.hist[m.cur]; h != nil {
		o.Usage, o.Drops = h.usage.values(), h.drops.values()
	}
	p := newPainter(&f, o)
	switch m.screen {
	case helpScreen:
		return strings.Join(p.help(), "\n")
	case findingsScreen:
		p.o.Footer = m.footer(p.st)
		lines, scroll := p.findingsScreen(m.sel, m.showFix, m.scroll)
		m.scroll = scroll
		return strings.Join(lines, "\n")
	}
	p.o.Footer = m.footer(p.st)
	return strings.Join(p.main(), "\n")
}

// footer is the screen's last line: the filter being typed, a message,
// or the keys.
func (m *Model) footer(st styles) string {
	k := func(key, what string) string { return st.key.Render(key) + " " + what }
	switch {
	case m.editing:
		return st.key.Render("filter: ") + m.filter + "▏" + st.dim.Render("  enter: keep · esc: clear")
	case m.flash != "":
		return st.bold.Render(m.flash)
	case m.screen == findingsScreen && m.showFix:
		return strings.Join([]string{k("↑/↓", "scroll"), k("p", "print it and quit"), k("esc", "back"), k("n", "netns"), k("q", "quit")}, "  ")
	case m.screen == findingsScreen:
		return strings.Join([]string{k("↑/↓", "select"), k("enter", "fix"), k("p", "print fix, quit"), k("esc", "back"), k("q", "quit")}, "  ")
	}
	var pre string
	if m.filter != "" {
		pre = st.key.Render("filter:") + st.bold.Render(m.filter) + st.dim.Render(" (esc clears)") + "  "
	}
	// The keys with their words while they fit, else the keys alone.
	full := pre + strings.Join([]string{k("s", "sort:"+m.sort.String()), k("/", "filter"), k("n/p", "netns"), k("f", "findings"), k("?", "help"), k("q", "quit")}, "  ")
	if lipgloss.Width(full) <= m.width {
		return full
	}
	return pre + strings.Join([]string{k("s", "sort"), k("/", "filter"), k("n/p", "ns"), k("f", "findings"), k("?", "help"), k("q", "quit")}, " ")
}

// tooSmall is the message for a terminal below MinWidth × MinHeight.
func tooSmall(w, h int) string {
	lines := []string{
		"Terminal too small:",
		itoa(w) + "×" + itoa(h) + ", ctdoctor top needs",
		"at least " + itoa(MinWidth) + "×" + itoa(MinHeight) + ".",
		"Enlarge the window,",
		"or run ctdoctor top --once.",
		"q quits.",
	}
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		if len(out) >= h {
			break
		}
		out = append(out, fit(l, w, false))
	}
	return strings.Join(out, "\n")
}

// maxHistory bounds a sparkline's samples: past it, pairs of samples are
// merged (by their maximum), so the line covers the whole session.
const maxHistory = 512

// history is one namespace's samples over the session.
type history struct{ usage, drops series }

// series is a bounded sequence of samples, each the maximum of stride
// refreshes.
type series struct {
	v       []float64
	stride  int
	pending int
	acc     float64
}

func (s *series) add(x float64) {
	if s.stride == 0 {
		s.stride = 1
	}
	if s.pending == 0 {
		s.acc = x
	} else {
		s.acc = max(s.acc, x)
	}
	s.pending++
	if s.pending < s.stride {
		return
	}
	s.v = append(s.v, s.acc)
	s.pending = 0
	if len(s.v) >= maxHistory {
		merged := s.v[:0]
		for i := 0; i+1 < len(s.v); i += 2 {
			merged = append(merged, max(s.v[i], s.v[i+1]))
		}
		s.v = merged
		s.stride *= 2
	}
}

// values is the samples, with the one being gathered.
func (s *series) values() []float64 {
	if s.pending > 0 {
		return append(slices.Clone(s.v), s.acc)
	}
	return s.v
}
