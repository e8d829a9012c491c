package cli

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/render"
)

// Piped output (stdout a pipe, not a terminal) follows $COLUMNS: with
// COLUMNS=80 no line of the report's head is wider than 80 and the
// breakdown's tables stand one under the other; without it, 100 columns.
func TestPipedOutputHonoursColumns(t *testing.T) {
	doctor := func() []string {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		done := make(chan struct{})
		go func() { io.Copy(&out, r); close(done) }()
		var errb bytes.Buffer
		code := Main([]string{"--root", fixtures + "centos5", "--color", "always"}, w, &errb)
		w.Close()
		<-done
		r.Close()
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		return strings.Split(render.StripANSI(out.String()), "\n")
	}
	widest := func(lines []string) (int, string) {
		n, at := 0, ""
		for _, l := range lines {
			if strings.HasPrefix(l, "Findings") {
				break // fix commands may hold an unbreakable word: render's tests cover them
			}
			if w := render.VisibleWidth(l); w > n {
				n, at = w, l
			}
		}
		return n, at
	}
	t.Setenv("COLUMNS", "80")
	lines := doctor()
	if n, at := widest(lines); n > 80 {
		t.Errorf("COLUMNS=80: a line %d wide:\n%s", n, at)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "\nBy TCP state\n") {
		t.Errorf("COLUMNS=80: the breakdown should be one column:\n%s", strings.Join(lines, "\n"))
	}
	t.Setenv("COLUMNS", "")
	lines = doctor()
	if n, at := widest(lines); n <= 80 || n > 100 {
		t.Errorf("no COLUMNS: the widest line is %d, want 81..100 (the 100-column default):\n%s", n, at)
	}
}
