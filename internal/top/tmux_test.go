package top_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// These tests run the real ctdoctor binary in a real terminal (tmux)
// against network namespaces with real traffic, and read the screen.

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// ctdoctor builds the binary once for the whole run (go build -o TMP
// ./cmd/ctdoctor); TestMain removes it.
func ctdoctor(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "ctdtop-bin-"); buildErr != nil {
			return
		}
		if buildErr = os.Chmod(binDir, 0o755); buildErr != nil { // nobody runs it too
			return
		}
		binPath = filepath.Join(binDir, "ctdoctor")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/ctdoctor")
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/ctdoctor: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// term is a tmux server of its own (its own socket, no user config) with
// one session running one command; t.Cleanup kills it, also when the
// test fails.
type term struct {
	t    *testing.T
	sock string
	name string
}

// newTerm runs command (a sh -c line) in a w×h terminal. When the command
// ends, the pane shows "EXIT=<status>" and stays.
func newTerm(t *testing.T, w, h int, command string) *term {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("skipped: tmux is not installed (apt-get install tmux)")
	}
	id := randomID()
	tm := &term{t: t, sock: "ctdtop-" + id, name: "top-" + id}
	var socket string
	t.Cleanup(func() {
		_ = exec.Command("tmux", "-f", "/dev/null", "-L", tm.sock, "kill-server").Run()
		if socket != "" {
			os.Remove(socket) // the server leaves it behind
		}
	})
	tm.run("new-session", "-d", "-s", tm.name, "-x", strconv.Itoa(w), "-y", strconv.Itoa(h),
		"sh", "-c", command+"; echo EXIT=$?; sleep 3600")
	socket = strings.TrimSpace(tm.run("display-message", "-p", "#{socket_path}"))
	return tm
}

func (tm *term) run(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-f", "/dev/null", "-L", tm.sock}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// screen is what the terminal shows now, as text.
func (tm *term) screen() string { return tm.run("capture-pane", "-p", "-t", tm.name) }

// history is the pane's whole text, the lines scrolled off included;
// joined puts the lines the terminal wrapped back together.
func (tm *term) history(joined bool) string {
	args := []string{"capture-pane", "-p", "-S", "-", "-t", tm.name}
	if joined {
		args = append(args, "-J")
	}
	return tm.run(args...)
}

// keys types keys (tmux key names: Enter, Escape, Tab, or text).
func (tm *term) keys(keys ...string) {
	tm.t.Helper()
	for _, k := range keys {
		tm.run("send-keys", "-t", tm.name, k)
	}
}

// resize sets the terminal's size, as a user dragging the window does
// (the program gets SIGWINCH).
func (tm *term) resize(w, h int) {
	tm.t.Helper()
	tm.run("resize-window", "-t", tm.name, "-x", strconv.Itoa(w), "-y", strconv.Itoa(h))
}

// waitFor polls the screen until ok holds, and fails the test with the
// screen after a generous minute.
func (tm *term) waitFor(what string, ok func(screen string) bool) string {
	tm.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		s := tm.screen()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("waited a minute for %s; the screen:\n%s", what, s)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (tm *term) waitText(text string) string {
	tm.t.Helper()
	return tm.waitFor(fmt.Sprintf("%q", text), func(s string) bool { return strings.Contains(s, text) })
}

// plainNS is a namespace that the test may delete itself (nstest's
// cleanup insists on deleting its own); it is deleted at the end if still there.
func plainNS(t *testing.T) string {
	t.Helper()
	name := "ctdtest-" + randomID()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", name, err, out)
	}
	return name
}

var (
	countRe = regexp.MustCompile(`Table .*\] [^ ]+ +([0-9,]+) / ([0-9,]+)`)
	timeRe  = regexp.MustCompile(`· (\d\d:\d\d:\d\d)`)
)

func atoi(s string) int {
	n, err := strconv.Atoi(strings.ReplaceAll(s, ",", ""))
	if err != nil {
		return -1
	}
	return n
}

// shownCount is the table's count on the screen, -1 when not shown.
func shownCount(s string) int {
	m := countRe.FindStringSubmatch(s)
	if m == nil {
		return -1
	}
	return atoi(m[1])
}

// shownTime is the frame's time in the title (time of day).
func shownTime(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	m := timeRe.FindStringSubmatch(first)
	if m == nil {
		return ""
	}
	return m[1]
}

// rowValue finds a table row "key  N" on the screen and returns N; -1
// when none.
func rowValue(s, key string) int {
	re := regexp.MustCompile(`(?:^|\s)` + regexp.QuoteMeta(key) + `\s+([0-9,]+)`)
	m := re.FindStringSubmatch(s)
	if m == nil {
		return -1
	}
	return atoi(m[1])
}

// kernelCounts are conntrack-tools' counts of the namespace's table: the
// total (conntrack -C), TCP entries and TIME_WAIT entries (conntrack -L).
type kernelCounts struct{ total, tcp, timeWait int }

func countsOf(t *testing.T, ns *nstest.NS) kernelCounts {
	t.Helper()
	var k kernelCounts
	k.total = atoi(strings.TrimSpace(ns.Run("conntrack", "-C")))
	for line := range strings.SplitSeq(ns.Run("conntrack", "-L"), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "tcp" {
			continue
		}
		k.tcp++
		if f[3] == "TIME_WAIT" {
			k.timeWait++
		}
	}
	return k
}

// webNS is a namespace with the demo firewall and nginx proxying to a
// local upstream: every request through it makes two loopback entries.
func webNS(t *testing.T) *nstest.NS {
	t.Helper()
	ns := nstest.New(t, "conntrack", "nft", "nginx", "curl", "wrk")
	ns.Nft(nstest.DemoRuleset)
	ns.StartNginx()
	return ns
}

// load runs wrk against nginx in the namespace for d, one new connection
// per request.
func load(t *testing.T, ns *nstest.NS, d time.Duration) {
	t.Helper()
	ns.Run("wrk", "-H", "Connection: close", "-t1", "-c8", "-d"+d.String(), "http://127.0.0.1/")
}

// The screen follows the kernel's table under real loopback traffic: one
// refresh after the count was read with conntrack-tools, the screen shows
// it (total, TCP, TIME_WAIT); the keys work: help, sort, filter,
// findings and a fix, namespace switch, quit (the terminal restored).
func TestTopFollowsTheTable(t *testing.T) {
	ns := webNS(t)
	other := plainNS(t)
	bin := ctdoctor(t)
	tm := newTerm(t, 80, 24, fmt.Sprintf("%s top --netns %s --netns %s --interval 1s --list-every 5s", bin, ns.Name, other))
	tm.waitText("netns " + ns.Name + " (1/2)")

	// After each burst: one refresh after the kernel's count was read,
	// the screen shows it; after the next full listing (every 5 s), the
	// rows show conntrack -L's counts too. Between listings events keep
	// the rows, and under a burst of loopback connections that reuse
	// TIME_WAIT tuples a row can be off by an entry or two for a while
	// (logged; the listing sets it right).
	for round := 1; round <= 2; round++ {
		load(t, ns, 2*time.Second)
		// Entries in short-lived states (CLOSE lasts 10 s) may expire
		// meanwhile: compare while the kernel's counts stay the same from
		// before the frames were made until after they were read.
		matched := false
		for try := 0; try < 10 && !matched; try++ {
			before := countsOf(t, ns)
			readAt := time.Now()
			// A frame made at least one refresh after the count was read
			// (its time, in whole seconds, past readAt + 1 s), and one made
			// after the next listing.
			first := readAt.Add(2 * time.Second).Truncate(time.Second).Format("15:04:05")
			listed := readAt.Add(7 * time.Second).Truncate(time.Second).Format("15:04:05")
			s := tm.waitFor("a frame from after "+first, func(s string) bool { return shownTime(s) >= first })
			s2 := tm.waitFor("a frame from after "+listed, func(s string) bool { return shownTime(s) >= listed })
			if now := countsOf(t, ns); now != before {
				continue // the table changed meanwhile: try again
			}
			matched = true
			if before.total < 1000 {
				t.Errorf("round %d: only %d entries after the load: the traffic did not reach the table", round, before.total)
			}
			if got := shownCount(s); got != before.total {
				t.Errorf("round %d: one refresh later the screen shows %d entries, conntrack -C %d:\n%s", round, got, before.total, s)
			}
			if tcp, tw := rowValue(s, "tcp"), rowValue(s, "TIME_WAIT"); tcp != before.tcp || tw != before.timeWait {
				t.Logf("round %d: one refresh later the rows show tcp %d and TIME_WAIT %d, conntrack -L %d and %d", round, tcp, tw, before.tcp, before.timeWait)
			}
			if got := shownCount(s2); got != before.total {
				t.Errorf("round %d: after a listing the screen shows %d entries, conntrack -C %d:\n%s", round, got, before.total, s2)
			}
			if got := rowValue(s2, "tcp"); got != before.tcp {
				t.Errorf("round %d: after a listing the screen shows %d tcp entries, conntrack -L %d:\n%s", round, got, before.tcp, s2)
			}
			if got := rowValue(s2, "TIME_WAIT"); got != before.timeWait {
				t.Errorf("round %d: after a listing the screen shows %d TIME_WAIT entries, conntrack -L %d:\n%s", round, got, before.timeWait, s2)
			}
		}
		if !matched {
			t.Fatalf("round %d: the table never held still for a refresh", round)
		}
	}

	// ? opens the help and closes it.
	tm.keys("?")
	tm.waitText("sort the tables")
	tm.keys("?")
	tm.waitText("By TCP state")

	// s sorts by change, then name, then entries again (the order itself
	// is the unit tests' business).
	for _, by := range []string{"change", "name", "entries"} {
		tm.keys("s")
		tm.waitText("sorted by " + by)
	}

	// / filters the rows: only loopback addresses are left.
	tm.keys("/", "127.0", "Enter")
	s := tm.waitText("filter:127.0")
	if !strings.Contains(s, "Top sources (1/") || rowValue(s, "127.0.0.1") <= 0 {
		t.Errorf("filter 127.0: the sources are not filtered:\n%s", s)
	}
	tm.keys("Escape")
	tm.waitFor("the filter cleared", func(s string) bool {
		return !strings.Contains(s, "filter:") && strings.Contains(s, "Top sources")
	})

	// f lists the findings; ↓ selects loopback-tracked, enter shows its fix.
	tm.keys("f")
	s = tm.waitText("▶")
	if !strings.Contains(s, "loopback-tracked") {
		t.Fatalf("the findings lack loopback-tracked (the table is mostly loopback traffic):\n%s", s)
	}
	for i := 0; !strings.Contains(selected(s), "loopback-tracked"); i++ {
		if i == 10 {
			t.Fatalf("down does not reach loopback-tracked:\n%s", s)
		}
		prev := selected(s)
		tm.keys("Down")
		s = tm.waitFor("the selection to move", func(s string) bool { return selected(s) != prev })
	}
	tm.keys("Enter")
	s = tm.waitText("Fix for loopback-tracked:")
	if !strings.Contains(s, "$ ip netns exec "+ns.Name+" nft") {
		t.Errorf("the fix is not the namespace's nft command:\n%s", s)
	}
	// Two escapes in one write would read as alt+esc: one, then the other.
	tm.keys("Escape")
	tm.waitFor("the list of findings", func(s string) bool {
		return !strings.Contains(s, "Fix for") && strings.Contains(s, "enter shows the fix")
	})
	tm.keys("Escape")
	tm.waitText("By TCP state")

	// n switches to the other namespace, p back.
	tm.keys("n")
	tm.waitText("netns " + other + " (2/2)")
	tm.keys("p")
	tm.waitText("netns " + ns.Name + " (1/2)")

	// q quits and restores the terminal: the alternate screen is left and
	// the exit status is 0.
	tm.keys("q")
	tm.waitText("EXIT=0")
	if alt := strings.TrimSpace(tm.run("display-message", "-p", "-t", tm.name, "#{alternate_on}")); alt != "0" {
		t.Errorf("after q the terminal is still on the alternate screen (%s)", alt)
	}
}

// selected is the screen's selected finding line.
func selected(s string) string {
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, "▶") {
			return l
		}
	}
	return ""
}

// titlesOnLine counts the table titles on the screen's first line of
// tables: how many tables stand side by side.
func titlesOnLine(s string) int {
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, "By TCP state") {
			return strings.Count(l, "By ") + strings.Count(l, "Top ")
		}
	}
	return 0
}

// fitsTerminal fails the test when the screen has more lines than h.
func fitsTerminal(t *testing.T, s string, w, h int) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > h {
		t.Errorf("%d lines on a %d-line terminal", len(lines), h)
	}
	for i, l := range lines {
		if n := len([]rune(l)); n > w {
			t.Errorf("line %d has %d characters on a %d-column terminal: %q", i+1, n, w, l)
		}
	}
}

// The layout adapts when the window is resized (SIGWINCH): more tables
// side by side on a wider one, a clear message on one too small, the
// screen back when it grows again.
func TestTopResize(t *testing.T) {
	ns := webNS(t)
	load(t, ns, time.Second)
	tm := newTerm(t, 80, 24, fmt.Sprintf("%s top --netns %s", ctdoctor(t), ns.Name))
	s := tm.waitFor("the first listing", func(s string) bool { return rowValue(s, "TIME_WAIT") > 0 })
	if n := titlesOnLine(s); n != 3 {
		t.Errorf("80x24: %d tables side by side, want 3:\n%s", n, s)
	}
	fitsTerminal(t, s, 80, 24)
	tm.resize(160, 40)
	s = tm.waitFor("5 tables side by side", func(s string) bool { return titlesOnLine(s) == 5 })
	fitsTerminal(t, s, 160, 40)
	tm.resize(50, 12)
	s = tm.waitText("Terminal too small")
	if !strings.Contains(s, "at least 60×16") {
		t.Errorf("the too-small message does not say the size needed:\n%s", s)
	}
	tm.resize(80, 24)
	s = tm.waitFor("3 tables side by side", func(s string) bool { return titlesOnLine(s) == 3 })
	fitsTerminal(t, s, 80, 24)
	if strings.Contains(s, "EXIT=") {
		t.Errorf("top ended:\n%s", s)
	}
}

// A namespace deleted while it is watched is shown as gone, with its last
// values; top keeps running and quits cleanly.
func TestTopNamespaceGone(t *testing.T) {
	nstest.Require(t, "conntrack")
	name := plainNS(t)
	tm := newTerm(t, 80, 24, fmt.Sprintf("%s top --netns %s --interval 500ms", ctdoctor(t), name))
	tm.waitText("netns " + name)
	tm.waitText("Table")
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", name, err, out)
	}
	s := tm.waitText("GONE")
	if !strings.Contains(s, "was deleted while watched") || strings.Contains(s, "EXIT=") {
		t.Errorf("the gone namespace:\n%s", s)
	}
	tm.keys("q")
	tm.waitText("EXIT=0")
}

// SIGTERM ends top with status 0 and the terminal restored.
func TestTopSIGTERM(t *testing.T) {
	nstest.Require(t, "conntrack")
	name := plainNS(t)
	tm := newTerm(t, 80, 24, fmt.Sprintf("%s top --netns %s", ctdoctor(t), name))
	tm.waitText("By TCP state")
	if alt := strings.TrimSpace(tm.run("display-message", "-p", "-t", tm.name, "#{alternate_on}")); alt != "1" {
		t.Errorf("top is not on the alternate screen (%s)", alt)
	}
	shell := strings.TrimSpace(tm.run("display-message", "-p", "-t", tm.name, "#{pane_pid}"))
	children, err := os.ReadFile("/proc/" + shell + "/task/" + shell + "/children")
	if err != nil || len(strings.Fields(string(children))) != 1 {
		t.Fatalf("the shell's children: %q, %v", children, err)
	}
	pid := strings.Fields(string(children))[0]
	if out, err := exec.Command("kill", "-TERM", pid).CombinedOutput(); err != nil {
		t.Fatalf("kill -TERM %s: %v: %s", pid, err, out)
	}
	tm.waitText("EXIT=0")
	if alt := strings.TrimSpace(tm.run("display-message", "-p", "-t", tm.name, "#{alternate_on}")); alt != "0" {
		t.Errorf("after SIGTERM the terminal is still on the alternate screen (%s)", alt)
	}
}

// --once in a terminal: colour by default, none at all under NO_COLOR;
// every line within the 80 columns (none wrapped by the terminal).
func TestTopOnceColors(t *testing.T) {
	ns := webNS(t)
	load(t, ns, time.Second)
	for _, env := range []string{"", "NO_COLOR=1 "} {
		tm := newTerm(t, 80, 24, fmt.Sprintf("%s%s top --once --netns %s", env, ctdoctor(t), ns.Name))
		tm.waitText("EXIT=")
		text := tm.history(false)
		if !strings.Contains(text, "EXIT=0") || !strings.Contains(text, "By TCP state") || !strings.Contains(text, "netns "+ns.Name) {
			t.Fatalf("%q--once:\n%s", env, text)
		}
		esc := tm.run("capture-pane", "-p", "-e", "-S", "-", "-t", tm.name)
		if got := strings.Contains(esc, "\x1b["); got != (env == "") {
			t.Errorf("%q--once: escape sequences %v, want %v:\n%q", env, got, env == "", esc)
		}
		if n, j := strings.Count(text, "\n"), strings.Count(tm.history(true), "\n"); n != j {
			t.Errorf("%q--once: the terminal wrapped %d lines wider than 80 columns:\n%s", env, n-j, text)
		}
	}
}

// Without the privilege to list the table (as nobody, in the test's
// namespace) the screen shows the error, not a blank screen.
func TestTopNoPermission(t *testing.T) {
	nstest.Require(t, "conntrack", "nsenter")
	name := plainNS(t)
	tm := newTerm(t, 80, 24, fmt.Sprintf("nsenter --net=/run/netns/%s --setgid 65534 --setuid 65534 -- %s top --interval 500ms", name, ctdoctor(t)))
	s := tm.waitFor("the error on screen", func(s string) bool { return strings.Contains(s, "ERROR") || strings.Contains(s, "EXIT=") })
	if !strings.Contains(s, "ERROR") || !regexp.MustCompile(`(?i)permi|CAP_NET_ADMIN|root`).MatchString(s) {
		t.Errorf("as nobody:\n%s", s)
	}
	tm.keys("q")
	tm.waitText("EXIT=0")
}

// --all-netns: n reaches a namespace created for the test among all the
// host's; deleted, it shows as gone.
func TestTopAllNetNS(t *testing.T) {
	nstest.Require(t, "conntrack")
	name := plainNS(t)
	tm := newTerm(t, 100, 30, fmt.Sprintf("%s top --all-netns --interval 500ms", ctdoctor(t)))
	s := tm.waitText("By TCP state")
	for i := 0; !strings.Contains(strings.SplitN(s, "\n", 2)[0], "netns "+name+" ("); i++ {
		if i == 200 {
			t.Fatalf("n never reached %s:\n%s", name, s)
		}
		prev := strings.SplitN(s, "\n", 2)[0]
		tm.keys("n")
		s = tm.waitFor("the next namespace", func(s string) bool {
			title := strings.SplitN(s, "\n", 2)[0]
			return timeRe.ReplaceAllString(title, "") != timeRe.ReplaceAllString(prev, "")
		})
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", name, err, out)
	}
	s = tm.waitText("GONE")
	if !strings.Contains(s, "netns "+name) {
		t.Errorf("another namespace is shown gone:\n%s", s)
	}
	tm.keys("q")
	tm.waitText("EXIT=0")
}
