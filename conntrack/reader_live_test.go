package conntrack

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// TestReadAllLiveConntrackL reads `conntrack -L 2>&1` straight from the
// tool, for a table of 3,000 entries in a namespace of the test's own: the
// summary on stderr is spliced into the block-buffered listing, and every
// entry must still be read, as many as `conntrack -C` counts and the
// summary announces, the same as in a listing without stderr.
func TestReadAllLiveConntrackL(t *testing.T) {
	ns := nstest.New(t, "conntrack", "nft", "sh")
	ns.Track()
	const n = 3000
	file := filepath.Join(t.TempDir(), "flows.txt")
	var b bytes.Buffer
	for i := range n {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&b, "-I -t 3600 -u ASSURED -s 10.1.%d.%d -d 10.200.0.1 -p tcp --sport %d --dport 443 --state ESTABLISHED\n",
				i>>8&255, i&255, 1024+i)
		case 1:
			fmt.Fprintf(&b, "-I -t 3600 -s 10.2.%d.%d -d 10.200.0.53 -p udp --sport %d --dport 53\n", i>>8&255, i&255, 1024+i)
		default:
			fmt.Fprintf(&b, "-I -t 3600 -s 10.3.%d.%d -d 10.200.0.2 -p icmp --icmp-type 8 --icmp-code 0 --icmp-id %d\n",
				i>>8&255, i&255, i)
		}
	}
	if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.LoadFlows(file)
	count, err := strconv.Atoi(strings.TrimSpace(ns.Run("conntrack", "-C")))
	if err != nil || count != n {
		t.Fatalf("conntrack -C: %d, %v; want %d", count, err, n)
	}

	mixed := ns.Run("sh", "-c", "conntrack -L 2>&1")
	clean := ns.Run("sh", "-c", "conntrack -L 2>/dev/null")
	var st ReadStats
	got := map[Tuple]bool{}
	if err := ReadAllStats(strings.NewReader(mixed), &st)(func(f *Flow) error {
		got[f.Orig] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if st.Entries != n || st.Shown != n || st.Summaries != 1 || st.Skipped != 0 || len(got) != n {
		t.Errorf("stats %+v, %d distinct entries; want %d entries, all announced, none skipped", st, len(got), n)
	}
	want := 0
	if err := ReadAll(strings.NewReader(clean))(func(f *Flow) error {
		want++
		if !got[f.Orig] {
			t.Errorf("entry %v of the stdout-only listing not read from the 2>&1 one", f.Orig)
		}
		return nil
	}); err != nil || want != n {
		t.Fatalf("stdout-only listing: %d entries, %v", want, err)
	}
	// Where the summary landed, for the log: mid-line on most runs.
	sc := bufio.NewScanner(strings.NewReader(mixed))
	for sc.Scan() {
		if i := strings.Index(sc.Text(), "conntrack v"); i >= 0 {
			t.Logf("summary at column %d (rejoined %d): %.60q…", i, st.Rejoined, sc.Text()[max(0, i-30):])
		}
	}
}
