package conntrack

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
)

// readListing reads data with ReadAllStats, keeping copies of the flows.
func readListing(t *testing.T, data []byte) ([]Flow, ReadStats, error) {
	t.Helper()
	var (
		st    ReadStats
		flows []Flow
	)
	err := ReadAllStats(bytes.NewReader(data), &st)(func(f *Flow) error {
		flows = append(flows, *f)
		return nil
	})
	return flows, st, err
}

// sameEntries compares two listings of the same table taken a moment
// apart: everything but the timeouts, which count down between the reads.
func sameEntries(t *testing.T, got, want []Flow) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		g.Timeout, w.Timeout = 0, 0
		if g != w {
			t.Fatalf("entry %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

// TestReadAllSplicedSummary reads real `conntrack -L 2>&1 | cat` output.
// conntrack-tools writes the entries to stdout, which is block-buffered on
// a pipe, and its "N flow entries have been shown." summary to stderr,
// which is not: the summary lands where the last 4 KiB block begins, here
// in the middle of line 51. The file conntrack-L-stdout.txt is the same
// table listed a moment later with stderr discarded (60 entries, as
// `conntrack -C` counted). All 60 entries must be read, the cut one put
// back together, and nothing reported as skipped.
func TestReadAllSplicedSummary(t *testing.T) {
	spliced, err := os.ReadFile("testdata/conntrack-L-2to1.txt")
	if err != nil {
		t.Fatal(err)
	}
	clean, err := os.ReadFile("testdata/conntrack-L-stdout.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(spliced, []byte("[UNREPLconntrack v1.4.7 (conntrack-tools): 60 flow entries have been shown.\n")) {
		t.Fatal("testdata no longer has the summary in the middle of an entry")
	}
	want, wst, err := readListing(t, clean)
	if err != nil || len(want) != 60 || wst.Skipped != 0 {
		t.Fatalf("clean listing: %d entries, %d skipped, err %v; want 60, 0, nil", len(want), wst.Skipped, err)
	}
	got, st, err := readListing(t, spliced)
	if err != nil {
		t.Fatal(err)
	}
	sameEntries(t, got, want)
	if st.Lines != 61 || st.Entries != 60 || st.Skipped != 0 || st.Summaries != 1 || st.Shown != 60 || st.Rejoined != 1 {
		t.Errorf("stats %+v, want 61 lines, 60 entries, 0 skipped, 1 summary showing 60, 1 rejoined", st)
	}
	if st.Format != FormatConntrack || st.Gzip {
		t.Errorf("format %v gzip %v, want conntrack, false", st.Format, st.Gzip)
	}

	// The summary cut in right at the end of an entry, before its newline:
	// the next line is empty.
	lines := strings.SplitAfter(string(clean), "\n")
	end := strings.TrimSuffix(lines[9], "\n")
	var b strings.Builder
	for i, l := range lines {
		if i == 9 {
			b.WriteString(end + "conntrack v1.4.8 (conntrack-tools): 60 flow entries have been shown.\n\n")
			continue
		}
		b.WriteString(l)
	}
	got, st, err = readListing(t, []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	sameEntries(t, got, want)
	if st.Skipped != 0 || st.Rejoined != 1 || st.Shown != 60 {
		t.Errorf("summary before a newline: stats %+v", st)
	}
}

// TestReadAllSkipsForeignLines: lines that are no entry are skipped and
// counted with their line numbers, and reading goes on past them.
func TestReadAllSkipsForeignLines(t *testing.T) {
	clean, err := os.ReadFile("testdata/conntrack-L-stdout.txt")
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := readListing(t, clean)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(clean), "\n"), "\n")
	foreign := map[int]string{ // index in the output → line
		0:  "Warning: Permanently added 'web-03' (ED25519) to the list of known hosts.\n",
		5:  "GET / HTTP/1.1\n",
		20: "tcp      6 119 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=41430\n", // an entry cut short
		40: "conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted\n",
		41: "\x00\x01\x02binary\xff\n",
		50: "ipv4     2 tcp      6 119 TIME_WAIT src=127.0.0.300 dst=127.0.0.1 sport=1 dport=2 src=127.0.0.1 dst=127.0.0.1 sport=2 dport=1 mark=0 use=1\n",
	}
	var b strings.Builder
	var skippedAt []int
	n := 0
	for _, l := range lines {
		for {
			f, ok := foreign[n]
			if !ok {
				break
			}
			b.WriteString(f)
			n++
			skippedAt = append(skippedAt, n)
		}
		b.WriteString(l)
		n++
	}
	b.WriteString("\n# a comment\n\n")
	got, st, err := readListing(t, []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	sameEntries(t, got, want)
	if st.Lines != 60+6+2 || st.Entries != 60 || st.Skipped != 6 {
		t.Errorf("stats %+v, want %d lines, 60 entries, 6 skipped", st, 60+6+2)
	}
	if !slices.Equal(st.SkippedLines, skippedAt[:MaxSkippedLines]) {
		t.Errorf("skipped lines %v, want the first %d of %v", st.SkippedLines, MaxSkippedLines, skippedAt)
	}
	if st.Sample != strings.TrimSpace(foreign[0]) || st.SampleError == "" {
		t.Errorf("sample %q (%s), want the first foreign line", st.Sample, st.SampleError)
	}
	s := st.String()
	for _, w := range []string{"68 lines", "60 entries", "6 skipped", "lines 1, 6, 21, 41, 42, …", "Warning: Permanently"} {
		if !strings.Contains(s, w) {
			t.Errorf("String() = %q, want it to mention %q", s, w)
		}
	}
}

func gzipped(t *testing.T, parts ...[]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, p := range parts { // each part its own gzip member, as `cat a.gz b.gz` gives
		zw := gzip.NewWriter(&b)
		if _, err := zw.Write(p); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// TestReadAllGzip: a gzip'd listing is recognised by its magic bytes,
// whatever the file is called; a damaged one is an error, not a short read.
func TestReadAllGzip(t *testing.T) {
	clean, err := os.ReadFile("testdata/conntrack-L-stdout.txt")
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := readListing(t, clean)
	if err != nil {
		t.Fatal(err)
	}
	half := bytes.Index(clean[len(clean)/2:], []byte("\n")) + len(clean)/2 + 1
	gz := gzipped(t, clean[:half], clean[half:])
	got, st, err := readListing(t, gz)
	if err != nil {
		t.Fatal(err)
	}
	sameEntries(t, got, want)
	if !st.Gzip || st.Entries != 60 || st.Lines != 60 {
		t.Errorf("stats %+v, want gzip, 60 lines, 60 entries", st)
	}

	_, _, err = readListing(t, gz[:len(gz)-40])
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "gzip") {
		t.Errorf("truncated gzip: err %v, want a gzip error wrapping io.ErrUnexpectedEOF", err)
	}
	bad := slices.Clone(gz)
	bad[len(bad)/3] ^= 0xff
	if _, _, err = readListing(t, bad); err == nil {
		t.Error("corrupt gzip: no error")
	}
	if _, _, err = readListing(t, []byte{0x1f, 0x8b, 0, 0}); err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Errorf("broken gzip header: err %v", err)
	}
}

// TestReadAllEmpty: an empty listing (an empty table, or a capture of
// stdout only) is no error, and says that nothing was read.
func TestReadAllEmpty(t *testing.T) {
	for _, tc := range []struct {
		name         string
		in           []byte
		lines, shown int
	}{
		{"empty file", nil, 0, 0},
		{"blank lines and comments", []byte("\n  \n# nothing here\n"), 3, 0},
		{"conntrack -L 2>&1 of an empty table", []byte("conntrack v1.4.7 (conntrack-tools): 0 flow entries have been shown.\n"), 1, 0},
		{"empty gzip", gzipped(t, nil), 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, st, err := readListing(t, tc.in)
			if err != nil || len(got) != 0 {
				t.Fatalf("%d entries, err %v; want none and no error", len(got), err)
			}
			if st.Lines != tc.lines || st.Entries != 0 || st.Skipped != 0 || st.Shown != tc.shown {
				t.Errorf("stats %+v", st)
			}
			if !strings.Contains(st.String(), "0 entries") {
				t.Errorf("String() = %q", st.String())
			}
		})
	}
}

// TestReadAllNothingParsed: input with lines but no entry at all is an
// error naming the first line, not an empty (healthy-looking) table.
func TestReadAllNothingParsed(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 13))
	garbage := make([]byte, 64*1024)
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	long := bytes.Repeat([]byte{0xab}, 3<<20) // no newline in 3 MiB
	for _, tc := range []struct {
		name   string
		in     []byte
		sample string
	}{
		{"binary garbage", garbage, string(garbage[:bytes.IndexByte(garbage, '\n')])},
		{"one 3 MiB binary line", long, ""},
		{"an HTTP request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "GET / HTTP/1.1"},
		{"conntrack error", []byte("conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted\n"),
			"conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted"},
		{"gzip'd text", gzipped(t, []byte("hello\nworld\n")), "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, st, err := readListing(t, tc.in)
			if !errors.Is(err, ErrNoEntries) {
				t.Fatalf("err %v, want ErrNoEntries", err)
			}
			var le *LineError
			if !errors.As(err, &le) || le.Line != 1 {
				t.Errorf("err %v: want the first line's LineError", err)
			}
			if len(got) != 0 || st.Entries != 0 || st.Skipped == 0 || st.Lines < st.Skipped {
				t.Errorf("%d entries, stats %+v", len(got), st)
			}
			if tc.sample != "" && !strings.HasPrefix(tc.sample, strings.TrimSuffix(st.Sample, "…")) {
				t.Errorf("sample %q, want the start of %q", st.Sample, tc.sample)
			}
			if len(st.Sample) > 130 {
				t.Errorf("sample of %d bytes, want it shortened", len(st.Sample))
			}
		})
	}
}

// TestReadAllLongLine: a line over the 1 MiB limit is skipped; the
// entries around it are read.
func TestReadAllLongLine(t *testing.T) {
	clean, err := os.ReadFile("testdata/conntrack-L-stdout.txt")
	if err != nil {
		t.Fatal(err)
	}
	half := bytes.Index(clean[len(clean)/2:], []byte("\n")) + len(clean)/2 + 1
	in := slices.Concat(clean[:half], bytes.Repeat([]byte("x"), 2<<20), []byte("\n"), clean[half:])
	got, st, err := readListing(t, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 60 || st.Skipped != 1 || st.Lines != 61 || !strings.Contains(st.SampleError, "1 MiB") {
		t.Errorf("%d entries, stats %+v; want 60 entries and the long line skipped", len(got), st)
	}
}

// TestReaderNextContinues: Next returns a LineError for a skipped line and
// the next call goes on with the following line.
func TestReaderNextContinues(t *testing.T) {
	r := NewReader(strings.NewReader("junk\n" + kernelLine + "\nmore junk\n" + kernelLine + "\n"))
	var f Flow
	var got []string
	for {
		err := r.Next(&f)
		if err == io.EOF {
			break
		}
		var le *LineError
		switch {
		case errors.As(err, &le):
			got = append(got, fmt.Sprintf("skip %d", le.Line))
		case err != nil:
			t.Fatal(err)
		default:
			got = append(got, "entry")
		}
	}
	want := []string{"skip 1", "entry", "skip 3", "entry"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if r.Lines() != 4 || r.Flows() != 2 || r.Skipped() != 2 {
		t.Errorf("lines %d flows %d skipped %d", r.Lines(), r.Flows(), r.Skipped())
	}
}

const kernelLine = "tcp      6 119 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=41430 dport=8080 src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=41430 [ASSURED] mark=0 use=1"

// FuzzReadAll feeds arbitrary input to the listing reader: it must not
// panic, its counts must add up, and "no entries" must be an error exactly
// when lines were skipped and none parsed.
func FuzzReadAll(f *testing.F) {
	for _, name := range []string{"conntrack-L-2to1.txt", "kernel-proc.txt", "kernel-save.txt", "kernel-conntrack-L.txt"} {
		data, _ := os.ReadFile("testdata/" + name)
		if len(data) > 4096 {
			data = data[len(data)-4096:]
		}
		f.Add(data)
	}
	f.Add([]byte(kernelLine[:40] + "conntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown.\n" + kernelLine[40:] + "\n"))
	f.Add([]byte("conntrack v1.4.7 (conntrack-tools): 99999999999999999999 flow entries have been shown.\n"))
	f.Add([]byte("x conntrack v1.4.7 (conntrack-tools): 0 flow entries have been shown.\nGET /\n"))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3})
	f.Add([]byte("\x00\xff\n\n#\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var st ReadStats
		n := 0
		err := ReadAllStats(bytes.NewReader(data), &st)(func(f *Flow) error {
			n++
			return nil
		})
		if n != st.Entries {
			t.Fatalf("%d entries handed out, stats say %d", n, st.Entries)
		}
		if st.Entries+st.Skipped > st.Lines || st.Summaries > st.Lines || st.Rejoined > st.Entries {
			t.Fatalf("counts exceed the lines: %+v", st)
		}
		if len(st.SkippedLines) > MaxSkippedLines || len(st.SkippedLines) > st.Skipped {
			t.Fatalf("skipped lines %v for %d skipped", st.SkippedLines, st.Skipped)
		}
		if st.Shown < 0 {
			t.Fatalf("shown %d", st.Shown)
		}
		noEntries := st.Entries == 0 && st.Skipped > 0
		if err == nil && noEntries {
			t.Fatalf("no error, but nothing parsed and %d lines skipped", st.Skipped)
		}
		if errors.Is(err, ErrNoEntries) && !noEntries {
			t.Fatalf("err %v with stats %+v", err, st)
		}
	})
}
