package cli

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// notListed checks that a report whose entries were not read says so, and
// why, instead of calling the table empty: in the JSON (listing) and in
// the text, which also gives the table's count.
func notListed(t *testing.T, r *analyze.Report, text, reason, why string, count int64) {
	t.Helper()
	if r.Listing == nil || r.Listing.Read || r.Listing.Reason != reason || !strings.Contains(r.Listing.Detail, why) {
		t.Errorf("listing %+v, want not read, reason %q, detail with %q", r.Listing, reason, why)
	}
	if r.Table.Count != count || r.Breakdown.Total != 0 {
		t.Errorf("table count %d (want %d), breakdown %d", r.Table.Count, count, r.Breakdown.Total)
	}
	flat := strings.Join(strings.Fields(text), " ")
	if strings.Contains(flat, "table is empty") {
		t.Errorf("the text calls a table of %d entries empty:\n%s", count, text)
	}
	for _, want := range []string{"No breakdown: the entries were not listed", why, "The table holds " + thousands(count) + " entries."} {
		if !strings.Contains(flat, want) {
			t.Errorf("the text lacks %q:\n%s", want, text)
		}
	}
}

// --root on hosts whose root has no entry listing, and --no-entries.
func TestNotListedOffline(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		reason string
		why    string
		count  int64
	}{
		// Counts from the fixtures' proc/sys/net/netfilter/nf_conntrack_count.
		{[]string{"--root", fixtures + "pre515"}, analyze.ListingUnavailable, "this root holds no entry listing", 261837},
		{[]string{"--root", fixtures + "ubuntu-noproc"}, analyze.ListingUnavailable, "this root holds no entry listing", 187406},
		{[]string{"--root", fixtures + "k8s-node", "--no-entries"}, analyze.ListingSkipped, "skipped on request", 3072},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(tc.args[1], "proc/sys/net/netfilter/nf_conntrack_count"))
			if err != nil || strings.TrimSpace(string(data)) != strconv.FormatInt(tc.count, 10) {
				t.Fatalf("fixture count %q (%v), want %d", data, err, tc.count)
			}
			r := report(t, tc.args...)
			text := run(t, append(tc.args, "--color", "never")...)
			notListed(t, r, text, tc.reason, tc.why, tc.count)
		})
	}
	// A listed fixture is read completely.
	r := report(t, "--root", fixtures+"k8s-node")
	if r.Listing == nil || !r.Listing.Read || r.Listing.Reason != "" || r.Breakdown.Total != 3072 {
		t.Errorf("k8s-node listing %+v, %d entries", r.Listing, r.Breakdown.Total)
	}
}

// The live cases: --no-entries in a namespace holding entries, and an
// unprivileged user inside that namespace.
func TestNotListedLive(t *testing.T) {
	ns := nstest.New(t, "conntrack", "nsenter")
	loadMixedTable(t, ns)
	args := []string{"--netns", ns.Name, "--no-entries", "--interval", "0"}
	r := report(t, args...)
	notListed(t, r, run(t, append(args, "--color", "never")...), analyze.ListingSkipped, "skipped on request", 3000)

	// As nobody inside the namespace: the count is world-readable, the listing is not.
	dir := worldDir(t)
	res := runAsNobody(t, ns.Path(), dir, "-o", "json", "--interval", "0", "--no-log")
	if res.code != 0 {
		t.Fatalf("as nobody in %s: exit %d: %s", ns.Name, res.code, res.stderr)
	}
	var rep analyze.Report
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, res.stdout)
	}
	if rep.Host.NetNS != ns.Name {
		t.Errorf("diagnosed namespace %q, want %s", rep.Host.NetNS, ns.Name)
	}
	text := runAsNobody(t, ns.Path(), dir, "--interval", "0", "--no-log", "--color", "never")
	notListed(t, &rep, text.stdout, analyze.ListingPermission, "needs root (CAP_NET_ADMIN", 3000)
}

// A snapshot written without its entries (--allow-partial, as nobody)
// says so when it is read back.
func TestNotListedPartialSnapshot(t *testing.T) {
	ns := nstest.New(t, "conntrack", "nsenter")
	loadMixedTable(t, ns)
	dir := worldDir(t)
	archive := filepath.Join(dir, "partial.tar.gz")
	if res := runAsNobody(t, ns.Path(), dir, "snapshot", "-o", archive, "--no-ruleset", "--allow-partial"); res.code != 0 {
		t.Fatalf("snapshot --allow-partial: exit %d: %s", res.code, res.stderr)
	}
	r := report(t, "--snapshot", archive)
	notListed(t, r, run(t, "--snapshot", archive, "--color", "never"), analyze.ListingUnavailable, "the snapshot holds none", 3000)
}

// writeListing writes a listing file, gzip-compressed when the name ends in .gz.
func writeListing(t *testing.T, dir, name, text string) string {
	t.Helper()
	data := []byte(text)
	if strings.HasSuffix(name, ".gz") {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(data)
		zw.Close()
		data = b.Bytes()
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A bare listing's headline says what was read: foreign lines skipped, an
// empty file (nothing to diagnose, not HEALTHY), conntrack's own "0 flow
// entries" (an empty table), a gzip file like its text.
func TestListingHeadline(t *testing.T) {
	data, err := os.ReadFile("../../conntrack/testdata/kernel-proc.txt")
	if err != nil {
		t.Fatal(err)
	}
	entries := strings.TrimSpace(string(data))
	nEntries := len(strings.Split(entries, "\n"))
	dir := t.TempDir()

	// Two foreign lines among the entries: all entries are read, and the headline counts the two.
	lines := strings.Split(entries, "\n")
	mixed := strings.Join(append(append([]string{"Warning: the ruleset changed while listing"}, lines[:3]...),
		append([]string{"ssh: connect to host x port 22: Connection refused"}, lines[3:]...)...), "\n") + "\n"
	for _, name := range []string{"mixed.txt", "mixed.txt.gz"} {
		path := writeListing(t, dir, name, mixed)
		r := report(t, "--from", path)
		want := " — 2 of " + thousands(int64(nEntries+2)) + " lines were skipped, not conntrack entries"
		if r.Breakdown.Total != int64(nEntries) || !strings.HasSuffix(r.Verdict.Reason, want+" (see the warnings)") {
			t.Errorf("%s: %d entries (want %d), verdict %q (want …%q)", name, r.Breakdown.Total, nEntries, r.Verdict.Reason, want)
		}
		if r.Listing == nil || r.Listing.Text == nil || r.Listing.Text.Skipped != 2 || r.Listing.Text.Gzip != strings.HasSuffix(name, ".gz") {
			t.Errorf("%s: listing %+v", name, r.Listing)
		}
		if out := run(t, "--from", path, "--color", "never"); !strings.Contains(strings.Join(strings.Fields(out), " "), "2 of "+thousands(int64(nEntries+2))+" lines were skipped") {
			t.Errorf("%s: the text headline does not name the skipped lines:\n%s", name, out)
		}
	}

	// Empty, blank or comment-only: nothing to diagnose.
	for _, text := range []string{"", "\n\n", "# conntrack -L of web1\n"} {
		path := writeListing(t, dir, "empty.txt", text)
		r := report(t, "--from", path)
		if r.Verdict.Level != analyze.Unknown || !strings.Contains(r.Verdict.Reason, "nothing to diagnose") ||
			r.Listing == nil || r.Listing.Reason != analyze.ListingEmpty {
			t.Errorf("listing %q: verdict %+v, listing %+v; want unknown, nothing to diagnose", text, r.Verdict, r.Listing)
		}
		out := run(t, "--from", path, "--color", "never")
		if strings.Contains(out, "HEALTHY") || strings.Contains(out, "table is empty") || !strings.Contains(out, "UNKNOWN") {
			t.Errorf("listing %q: the text claims a checked table:\n%s", text, out)
		}
	}
	// conntrack's own summary of an empty table (conntrack -L 2>&1 on an empty table).
	path := writeListing(t, dir, "zero.txt", "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been shown.\n")
	if r := report(t, "--from", path); r.Verdict.Level != analyze.Healthy || !strings.Contains(r.Verdict.Reason, "the listed table is empty") {
		t.Errorf("conntrack's 0 entries: verdict %+v", r.Verdict)
	}
	// Only foreign lines: an error, not a report.
	path = writeListing(t, dir, "foreign.txt", "GET / HTTP/1.1\nHost: x\n")
	failing(t, []string{"--from", path}, "no conntrack entries", "line 1")
}

// `conntrack -L 2>&1` splices conntrack's summary into the listing: every
// entry still counts, as the kernel's count says.
func TestListingWithStderr(t *testing.T) {
	ns := nstest.New(t, "conntrack", "sh")
	loadMixedTable(t, ns)
	out := ns.Run("sh", "-c", "conntrack -L 2>&1")
	if !strings.Contains(out, "flow entries have been shown") {
		t.Fatalf("conntrack -L 2>&1 printed no summary:\n%.300s", out)
	}
	path := writeListing(t, t.TempDir(), "with-stderr.txt", out)
	r := report(t, "--from", path)
	if r.Breakdown.Total != 3000 || r.Listing == nil || r.Listing.Text == nil || r.Listing.Text.Skipped != 0 ||
		strings.Contains(r.Verdict.Reason, "skipped") {
		t.Errorf("%d entries of 3000, listing %+v, verdict %q", r.Breakdown.Total, r.Listing, r.Verdict.Reason)
	}
}

// --root on a directory that is no host's root is refused, saying what it
// expected and what to use instead.
func TestRootNotAHost(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	archive := writeListing(t, dir, "x.tar.gz", "not really")
	for _, root := range []string{dir, t.TempDir(), archive} {
		r := mainResult("--root", root)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "--snapshot") || !strings.Contains(r.stderr, root) {
			t.Errorf("--root %s: exit %d, stdout %q, stderr %q; want exit 1 pointing to --snapshot", root, r.code, r.stdout, r.stderr)
		}
	}
	if r := mainResult("--root", dir); !strings.Contains(r.stderr, "not a host root") || !strings.Contains(r.stderr, "proc/sys/kernel/osrelease") {
		t.Errorf("--root on a plain directory: %q", r.stderr)
	}
}

// thousands writes n with thousands separators, as the text report does.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
