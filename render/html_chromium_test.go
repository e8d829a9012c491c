package render

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	xhtml "golang.org/x/net/html"
)

// The HTML report in a real browser: headless Chromium (Debian's
// chromium package) renders it to screenshots at phone and desktop
// widths, dumps the DOM it built, logs the console to stderr and every
// network request to a NetLog. Every host name resolves to nothing
// (--host-resolver-rules), so nothing leaves the machine even if the page
// asked for it; the NetLog shows whether it asked.

// Set CTDOCTOR_UPDATE_SCREENSHOTS=1 to rewrite docs/img/report-centos5.png.
const screenshotEnv = "CTDOCTOR_UPDATE_SCREENSHOTS"

type browser struct {
	bin, dir string
	n        int
}

// newBrowser finds headless Chromium, or skips the test.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the browser tests of the HTML report are skipped")
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if bin, err := exec.LookPath(name); err == nil {
			return &browser{bin: bin, dir: t.TempDir()}
		}
	}
	t.Skip("chromium is not installed (Debian: apt-get install chromium): the browser tests of the HTML report are skipped")
	return nil
}

// browserRun is what one Chromium run left: its stdout, its console
// messages and the URLs the page requested.
type browserRun struct {
	stdout   []byte
	console  []string
	requests []string
}

// run starts Chromium on url with the flags that work here (no sandbox,
// no GPU, no background traffic, a fresh profile) and extra ones.
func (b *browser) run(t *testing.T, url string, extra ...string) browserRun {
	t.Helper()
	b.n++
	netlog := filepath.Join(b.dir, fmt.Sprintf("net%d.json", b.n))
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(b.dir, "profile"), "--host-resolver-rules=MAP * ~NOTFOUND",
		"--hide-scrollbars", "--enable-logging=stderr", "--v=0", "--log-net-log=" + netlog}
	args = append(append(args, extra...), url)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(extra, " "), err, stderr.String())
	}
	return browserRun{stdout: stdout.Bytes(), console: consoleMessages(stderr.Bytes()), requests: pageRequests(t, netlog)}
}

// consoleLine is how Chromium logs a page's console message to stderr:
// "[…:INFO:CONSOLE:1] "message", source: file:///… (1)".
var consoleLine = regexp.MustCompile(`:CONSOLE[:(\]]`)

func consoleMessages(stderr []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(stderr))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if consoleLine.MatchString(sc.Text()) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// pageRequests reads a NetLog and returns the URLs the page asked for:
// the requests whose network isolation key is a file:// page's (the
// browser's own background requests have other keys), other than file:
// URLs themselves.
func pageRequests(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("netlog: %v", err)
	}
	var log struct {
		Constants struct {
			LogEventTypes map[string]int `json:"logEventTypes"`
		} `json:"constants"`
		Events []struct {
			Type   int            `json:"type"`
			Params map[string]any `json:"params"`
		} `json:"events"`
	}
	if err := json.Unmarshal(data, &log); err != nil {
		// A log cut short ends after an event: close it.
		trimmed := strings.TrimRight(strings.TrimSpace(string(data)), ",")
		if err2 := json.Unmarshal([]byte(trimmed+"]}"), &log); err2 != nil {
			t.Fatalf("netlog %s: %v", path, err)
		}
	}
	start, ok := log.Constants.LogEventTypes["URL_REQUEST_START_JOB"]
	if !ok {
		t.Fatal("netlog without URL_REQUEST_START_JOB events")
	}
	var out []string
	for _, e := range log.Events {
		if e.Type != start {
			continue
		}
		url, _ := e.Params["url"].(string)
		nik, _ := e.Params["network_isolation_key"].(string)
		if strings.Contains(nik, "file://") && !strings.HasPrefix(url, "file:") {
			out = append(out, url)
		}
	}
	return out
}

func (b *browser) write(t *testing.T, name string, page []byte) string {
	t.Helper()
	path := filepath.Join(b.dir, name)
	if err := os.WriteFile(path, page, 0o644); err != nil {
		t.Fatal(err)
	}
	return "file://" + path
}

// screenshot renders url in a window of w×h CSS pixels and returns the PNG.
func (b *browser) screenshot(t *testing.T, url string, w, h int) (image.Image, []byte, browserRun) {
	t.Helper()
	b.n++
	out := filepath.Join(b.dir, fmt.Sprintf("shot%d.png", b.n))
	r := b.run(t, url, fmt.Sprintf("--window-size=%d,%d", w, h), "--screenshot="+out)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	return img, data, r
}

// inFrame wraps a page in a test page that shows it in an iframe width
// CSS pixels wide (headless Chromium's window is never narrower than 500
// pixels; a frame is the phone's viewport) and, once it has loaded,
// writes on its own <body> how wide the page's content is (scrollWidth),
// how wide the frame's viewport is (clientWidth) and which elements
// stick out of it, other than inside the code blocks and the chart that
// scroll (all of them with wholePre, as on paper, where nothing scrolls).
// The script is the test's: the report has none.
func inFrame(page []byte, width, height int, wholePre bool) []byte {
	return []byte(`<!DOCTYPE html><html><head><style>body{margin:0}iframe{border:0;display:block}</style></head><body>` +
		fmt.Sprintf(`<iframe id="f" width="%d" height="%d" srcdoc="%s"></iframe>`, width, height, html.EscapeString(string(page))) +
		`<script>
document.getElementById("f").addEventListener("load", function () {
  const d = this.contentDocument, root = d.documentElement, out = [];
  for (const e of d.querySelectorAll("body *")) {
    const r = e.getBoundingClientRect();
    if (r.right > root.clientWidth + 0.5 && (` + strconv.FormatBool(wholePre) + ` || !e.closest("pre, .chart"))) out.push(e.tagName.toLowerCase() + "." + e.className);
  }
  document.body.setAttribute("data-scroll-width", root.scrollWidth);
  document.body.setAttribute("data-client-width", root.clientWidth);
  document.body.setAttribute("data-outside", out.slice(0, 10).join(" "));
});
</script></body></html>`)
}

// frameWidths runs inFrame's measurement.
func (b *browser) frameWidths(t *testing.T, page []byte, width int, wholePre bool) (scroll, client int, outside string) {
	t.Helper()
	b.n++
	r := b.run(t, b.write(t, fmt.Sprintf("frame%d.html", b.n), inFrame(page, width, 800, wholePre)), "--window-size=800,900",
		"--virtual-time-budget=5000", "--dump-dom")
	doc, err := xhtml.Parse(bytes.NewReader(r.stdout))
	if err != nil {
		t.Fatal(err)
	}
	body := findAll(doc, elem("body"))
	if len(body) != 1 || attr(body[0], "data-scroll-width") == "" {
		t.Fatalf("the measurement did not run:\n%.400s", r.stdout)
	}
	scroll, _ = strconv.Atoi(attr(body[0], "data-scroll-width"))
	client, _ = strconv.Atoi(attr(body[0], "data-client-width"))
	return scroll, client, attr(body[0], "data-outside")
}

// pixels counts an image's pixels that are not (nearly) white, its
// distinct colours, and the pixels within 24 of the colour want on each
// channel.
func pixels(img image.Image, want [3]int) (nonWhite, colours, near, total int) {
	seen := map[[3]int]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			c := [3]int{int(r >> 8), int(g >> 8), int(bl >> 8)}
			seen[c] = true
			if c[0] < 245 || c[1] < 245 || c[2] < 245 {
				nonWhite++
			}
			if abs(c[0]-want[0]) <= 24 && abs(c[1]-want[1]) <= 24 && abs(c[2]-want[2]) <= 24 {
				near++
			}
			total++
		}
	}
	return nonWhite, len(seen), near, total
}

func abs(x int) int { return max(x, -x) }

// critical is the verdict's red (--critical in html.css).
var critical = [3]int{0xdc, 0x26, 0x26}

// The CentOS 5 report (the table far over its limit) in Chromium: the
// DOM the browser built has the text of the file and carries -o json's
// numbers; no console message; no request leaves the page; a desktop
// screenshot and a phone one (390 px) show the page — not blank, the
// red of a critical verdict in both; at 320 and 390 px the page is no
// wider than the screen (only code blocks scroll); its print stylesheet
// wraps long commands to the paper's width; it prints to PDF.
func TestHTMLInChromium(t *testing.T) {
	b := newBrowser(t)
	rep := fixtureReport(t, "centos5")
	rep.GeneratedAt = time.Date(2026, 11, 8, 9, 0, 0, 0, time.UTC) // a fixed date: the screenshot is reproducible
	page := renderHTML(t, rep, HTMLOptions{})
	url := b.write(t, "report.html", page)

	r := b.run(t, url, "--dump-dom")
	if len(r.console) > 0 || len(r.requests) > 0 {
		t.Errorf("console messages %q, requests %q", r.console, r.requests)
	}
	dom, err := xhtml.Parse(bytes.NewReader(r.stdout))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pageText(dom), pageText(parseHTML(t, page)); got != want {
		t.Errorf("the browser's DOM does not have the file's text:\n got %.300q\nwant %.300q", got, want)
	}
	checkCarriesJSON(t, rep, dom)

	img, data, r := b.screenshot(t, url, 1000, 2800)
	if len(r.console) > 0 || len(r.requests) > 0 {
		t.Errorf("desktop screenshot: console messages %q, requests %q", r.console, r.requests)
	}
	nonWhite, colours, red, total := pixels(img, critical)
	t.Logf("desktop %v: %d%% not white, %d colours, %d red pixels", img.Bounds().Size(), nonWhite*100/total, colours, red)
	if img.Bounds().Dx() != 1000 || nonWhite < total/5 || colours < 64 || red < 2000 {
		t.Errorf("desktop screenshot looks blank or unstyled: %v, %d of %d pixels not white, %d colours, %d red",
			img.Bounds().Size(), nonWhite, total, colours, red)
	}
	if os.Getenv(screenshotEnv) == "1" {
		dir := filepath.Join("..", "docs", "img")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "report-centos5.png"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	phone := b.write(t, "phone.html", inFrame(page, 390, 3000, false))
	img, _, r = b.screenshot(t, phone, 390, 3000)
	if len(r.console) > 0 || len(r.requests) > 0 {
		t.Errorf("phone screenshot: console messages %q, requests %q", r.console, r.requests)
	}
	nonWhite, colours, red, total = pixels(img, critical)
	t.Logf("phone %v: %d%% not white, %d colours, %d red pixels", img.Bounds().Size(), nonWhite*100/total, colours, red)
	if img.Bounds().Dx() != 390 || nonWhite < total/5 || colours < 64 || red < 500 {
		t.Errorf("phone screenshot looks blank or unstyled: %v, %d of %d pixels not white, %d colours, %d red",
			img.Bounds().Size(), nonWhite, total, colours, red)
	}
	for _, w := range []int{320, 390} {
		scroll, client, outside := b.frameWidths(t, page, w, false)
		t.Logf("%d px frame: content %d px wide in a %d px viewport", w, scroll, client)
		if client == 0 || client > w || scroll > client || outside != "" {
			t.Errorf("%d px: the page is %d px wide in a %d px viewport (sticking out: %q)", w, scroll, client, outside)
		}
	}

	// On paper nothing scrolls: with the print stylesheet applied to the
	// screen, nothing sticks out of an A4 page's text width (180 mm, 680
	// CSS pixels), code blocks included — where on screen the long
	// commands do stick out of theirs (and scroll).
	const paper = 680
	if _, _, outside := b.frameWidths(t, page, paper, true); !strings.Contains(outside, "code") {
		t.Errorf("on screen at %d px no command sticks out of its block: the print check below checks nothing", paper)
	}
	if n := bytes.Count(page, []byte("@media print {")); n != 1 {
		t.Fatalf("%d print stylesheets", n)
	}
	printed := bytes.Replace(page, []byte("@media print {"), []byte("@media all {"), 1)
	if scroll, client, outside := b.frameWidths(t, printed, paper, true); scroll > client || outside != "" {
		t.Errorf("printed at %d px: %d px wide in %d, sticking out: %q", paper, scroll, client, outside)
	}

	pdf := filepath.Join(b.dir, "report.pdf")
	r = b.run(t, url, "--print-to-pdf="+pdf, "--no-pdf-header-footer")
	data, err = os.ReadFile(pdf)
	if err != nil {
		t.Fatalf("print: %v", err)
	}
	t.Logf("printed: %d bytes", len(data))
	if !bytes.HasPrefix(data, []byte("%PDF-")) || len(data) < 20000 || len(r.console) > 0 || len(r.requests) > 0 {
		t.Errorf("print: %d bytes, console %q, requests %q", len(data), r.console, r.requests)
	}
}

// Every fixture host's page in Chromium: the DOM has the file's text,
// no console message, no request.
func TestHTMLFixturesInChromium(t *testing.T) {
	b := newBrowser(t)
	for _, name := range fixtureHosts(t) {
		page := renderHTML(t, fixtureReport(t, name), HTMLOptions{})
		r := b.run(t, b.write(t, name+".html", page), "--dump-dom")
		if len(r.console) > 0 || len(r.requests) > 0 {
			t.Errorf("%s: console messages %q, requests %q", name, r.console, r.requests)
		}
		dom, err := xhtml.Parse(bytes.NewReader(r.stdout))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := pageText(dom), pageText(parseHTML(t, page)); got != want {
			t.Errorf("%s: the browser's DOM does not have the file's text", name)
		}
	}
	// The layout report of the text tests (long IPv6 addresses, long
	// namespace names, long commands), a plan and a simulation with its
	// chart fit a phone too.
	var plan bytes.Buffer
	if err := PlanHTML(&plan, centos5Plan(t), HTMLOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, page := range map[string][]byte{
		"long report": renderHTML(t, longReport(t), HTMLOptions{}),
		"plan":        plan.Bytes(),
		"simulation":  renderHTML(t, sample(), HTMLOptions{Simulation: sampleSimulation()}),
	} {
		scroll, client, outside := b.frameWidths(t, page, 360, false)
		if scroll > client || outside != "" {
			t.Errorf("%s at 360 px: %d px wide in %d (sticking out: %q)", name, scroll, client, outside)
		}
	}
}

// The checks above catch what they look for: a page that logs to the
// console, loads an image from the network and is wider than a phone
// fails each of them.
func TestChromiumChecksCatchFaults(t *testing.T) {
	b := newBrowser(t)
	bad := []byte(`<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width"></head><body>` +
		`<p>bad</p><img src="http://example.invalid/pixel.png" alt=""><div style="width:700px">wide</div>` +
		`<script>console.error("boom")</script></body></html>`)
	r := b.run(t, b.write(t, "bad.html", bad), "--dump-dom")
	if len(r.console) != 1 || !strings.Contains(r.console[0], "boom") {
		t.Errorf("console.error not seen: %q", r.console)
	}
	if len(r.requests) != 1 || r.requests[0] != "http://example.invalid/pixel.png" {
		t.Errorf("the image request not seen: %q", r.requests)
	}
	if scroll, client, outside := b.frameWidths(t, bad, 390, false); scroll <= client || !strings.Contains(outside, "div") {
		t.Errorf("a 700 px element in a 390 px frame not seen: %d in %d, %q", scroll, client, outside)
	}
}
