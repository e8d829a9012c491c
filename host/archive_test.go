package host

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testFiles is a small snapshot's worth of files.
func testFiles(t testing.TB) map[string][]byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 6))
	random := make([]byte, 70000) // incompressible: truncation offsets land inside it
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	return map[string][]byte{
		"ctdoctor/meta.json":                          []byte(`{"format":"ctdoctor.snapshot/v1"}` + "\n"),
		"proc/sys/net/netfilter/nf_conntrack_max":     []byte("262144\n"),
		"proc/sys/net/netfilter/nf_conntrack_count":   []byte("12\n"),
		"sys/module/nf_conntrack/parameters/hashsize": []byte("65536\n"),
		"proc/net/stat/nf_conntrack":                  []byte(""),
		"proc/net/nf_conntrack":                       random,
	}
}

// writeTestArchive writes files (in sorted order) with an ArchiveWriter.
func writeTestArchive(t testing.TB, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	aw := NewArchiveWriter(&buf)
	aw.ModTime = time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC)
	for _, name := range sortedKeys(files) {
		var err error
		if name == "proc/net/nf_conntrack" {
			err = aw.AddStream(name, int64(len(files[name])), bytes.NewReader(files[name]))
		} else {
			err = aw.AddFile(name, files[name])
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sortedKeys(m map[string][]byte) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	for i := range keys { // small: insertion sort keeps the imports short
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

// extractDir returns base (a fresh temp dir) and dir = base/sub/root, so
// that a "../x" escape would land inside base where checkConfined sees it.
func extractDir(t testing.TB) (base, dir string) {
	t.Helper()
	base = t.TempDir()
	dir = filepath.Join(base, "sub", "root")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return base, dir
}

// checkConfined fails if anything under base is outside dir, or if dir
// holds anything but regular files and directories.
func checkConfined(t testing.TB, base, dir string) {
	t.Helper()
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch p {
		case base, filepath.Join(base, "sub"), dir:
			return nil
		}
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Errorf("%s written outside the extraction directory", p)
		}
		if !d.Type().IsRegular() && !d.IsDir() {
			t.Errorf("%s is a %v", p, d.Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			if fi.Mode().Perm()&^0o755 != 0 {
				t.Errorf("%s: mode %v", p, fi.Mode())
			}
			return nil
		}
		if fi.Mode().Perm()&^0o644 != 0 {
			t.Errorf("%s: mode %v", p, fi.Mode())
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		got[filepath.ToSlash(rel)] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestArchiveRoundTrip(t *testing.T) {
	files := testFiles(t)
	data := writeTestArchive(t, files)
	if again := writeTestArchive(t, files); !bytes.Equal(data, again) {
		t.Errorf("the same files give different archives")
	}
	// Headers: deterministic owner, modes and time.
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		wantMode := int64(0o644)
		if h.Typeflag == tar.TypeDir {
			wantMode = 0o755
		}
		if h.Mode != wantMode || h.Uid != 0 || h.Gid != 0 || h.Uname != "" ||
			!h.ModTime.Equal(time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)) || strings.HasPrefix(h.Name, "/") {
			t.Errorf("header %+v", h)
		}
	}
	base, dir := extractDir(t)
	if err := ExtractArchive(bytes.NewReader(data), dir, ArchiveLimits{}); err != nil {
		t.Fatal(err)
	}
	checkConfined(t, base, dir)
	got := readTree(t, dir)
	if len(got) != len(files) {
		t.Errorf("extracted %d files, want %d", len(got), len(files))
	}
	for name, want := range files {
		if !bytes.Equal(got[name], want) {
			t.Errorf("%s: %d bytes, want %d identical bytes", name, len(got[name]), len(want))
		}
	}
}

func TestArchiveWriterAddReader(t *testing.T) {
	var buf bytes.Buffer
	aw := NewArchiveWriter(&buf)
	big := bytes.Repeat([]byte("ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2\n"), 50000)
	if err := aw.AddReader("proc/net/nf_conntrack", bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	if err := aw.AddFile("ctdoctor/meta.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_, dir := extractDir(t)
	if err := ExtractArchive(&buf, dir, ArchiveLimits{}); err != nil {
		t.Fatal(err)
	}
	if got := readTree(t, dir)["proc/net/nf_conntrack"]; !bytes.Equal(got, big) {
		t.Errorf("entries: %d bytes, want %d", len(got), len(big))
	}
}

func TestArchiveWriterRejects(t *testing.T) {
	for _, name := range []string{"", ".", "./", "/etc/passwd", "../x", "a/../../x", "a/..", "a\\b", "a\x00b"} {
		aw := NewArchiveWriter(io.Discard)
		if err := aw.AddFile(name, nil); err == nil {
			t.Errorf("AddFile(%q) accepted", name)
		}
	}
	aw := NewArchiveWriter(io.Discard)
	if err := aw.AddFile("./a//b/", []byte("x")); err != nil {
		t.Errorf("AddFile(./a//b/): %v", err)
	}
	if err := aw.AddFile("a/b", nil); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("duplicate: %v", err)
	}
	if err := aw.AddFile("a/b/c", nil); err == nil {
		t.Errorf("file under a file accepted")
	}
	if err := aw.AddStream("x", -1, strings.NewReader("")); err == nil {
		t.Errorf("negative size accepted")
	}
	// A short stream breaks the tar stream: the error sticks.
	err := aw.AddStream("short", 10, strings.NewReader("abc"))
	if err == nil || !strings.Contains(err.Error(), "3 of 10") {
		t.Fatalf("short stream: %v", err)
	}
	if err2 := aw.AddFile("later", nil); err2 == nil {
		t.Errorf("AddFile after a failed AddStream accepted")
	}
	if err2 := aw.Close(); err2 == nil {
		t.Errorf("Close after a failed AddStream succeeded")
	}
	if err := aw.AddFile("after-close", nil); err == nil {
		t.Errorf("AddFile after Close accepted")
	}
}

// rawEntry is one entry of a hand-built (possibly hostile) archive.
type rawEntry struct {
	hdr  tar.Header
	data string
}

func buildTarGz(t testing.TB, entries []rawEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(e.data))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, e.data); err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
	}
	// Not tw.Close: an entry may be short on purpose. Write the end marker by hand.
	if err := tw.Flush(); err == nil {
		tw.Close()
	}
	gz.Close()
	return buf.Bytes()
}

func reg(name, data string) rawEntry {
	return rawEntry{hdr: tar.Header{Name: name}, data: data}
}

func TestExtractArchiveHostile(t *testing.T) {
	small := ArchiveLimits{MaxTotal: 3000, MaxFile: 2000, MaxEntries: 5}
	many := []rawEntry{}
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		many = append(many, reg(n, "x"))
	}
	for _, tc := range []struct {
		name    string
		entries []rawEntry
		want    error
		msg     string // in the error message
	}{
		{"dotdot", []rawEntry{reg("../x", "evil")}, ErrUnsafeEntry, `"../x"`},
		{"absolute", []rawEntry{reg("/etc/passwd", "evil")}, ErrUnsafeEntry, `"/etc/passwd": absolute`},
		{"inner dotdot", []rawEntry{reg("a/../../x", "evil")}, ErrUnsafeEntry, `"a/../../x"`},
		{"dot dotdot", []rawEntry{reg("./../x", "evil")}, ErrUnsafeEntry, `"./../x"`},
		{"long dotdot", []rawEntry{reg("a/../../"+strings.Repeat("y", 200), "evil")}, ErrUnsafeEntry, `".." component`},
		{"backslash", []rawEntry{reg(`..\x`, "evil")}, ErrUnsafeEntry, "backslash"},
		{"symlink", []rawEntry{{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc"}}, reg("link/passwd", "evil")},
			ErrUnsafeEntry, `"link": symbolic link entries are not allowed`},
		{"relative symlink", []rawEntry{{hdr: tar.Header{Name: "proc", Typeflag: tar.TypeSymlink, Linkname: "../.."}}},
			ErrUnsafeEntry, `"proc": symbolic link`},
		{"hardlink", []rawEntry{reg("a", "x"), {hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}}},
			ErrUnsafeEntry, `"h": hard link`},
		{"char device", []rawEntry{{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}},
			ErrUnsafeEntry, `"dev/null": character device`},
		{"block device", []rawEntry{{hdr: tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8}}},
			ErrUnsafeEntry, `"sda": block device`},
		{"fifo", []rawEntry{{hdr: tar.Header{Name: "fifo", Typeflag: tar.TypeFifo}}}, ErrUnsafeEntry, `"fifo": FIFO`},
		{"duplicate", []rawEntry{reg("a", "1"), reg("a", "2")}, ErrUnsafeEntry, "duplicate"},
		{"file over dir", []rawEntry{reg("a", "1"), reg("a/b", "2")}, ErrUnsafeEntry, "not a directory"},
		{"dir with data", []rawEntry{{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Size: 10}}}, ErrUnsafeEntry, "directory with"},
		{"size lies", []rawEntry{reg("ok", "fine"), {hdr: tar.Header{Name: "proc/net/nf_conntrack", Size: 1000}, data: "only ten b"}},
			ErrSnapshotTruncated, "after 10 bytes of proc/net/nf_conntrack"},
		{"too many entries", many, ErrArchiveLimit, "more than 5 entries"},
		{"file too big", []rawEntry{reg("big", strings.Repeat("x", 2001))}, ErrArchiveLimit, "big is 2001 bytes"},
		{"total too big", []rawEntry{reg("a", strings.Repeat("x", 1500)), reg("b", strings.Repeat("x", 1501))}, ErrArchiveLimit, "more than 3000 bytes in all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, dir := extractDir(t)
			err := ExtractArchive(bytes.NewReader(buildTarGz(t, tc.entries)), dir, small)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
			checkConfined(t, base, dir)
			if _, err := os.Lstat("/etc/passwd"); err == nil {
				if b, _ := os.ReadFile("/etc/passwd"); string(b) == "evil" {
					t.Fatal("/etc/passwd overwritten")
				}
			}
		})
	}
}

// TestExtractArchiveLyingHeader feeds a file whose data is longer than
// its header says: the surplus is read as the next header and rejected,
// and only the declared bytes are written.
func TestExtractArchiveLyingHeader(t *testing.T) {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Name: "short", Typeflag: tar.TypeReg, Size: 4, Mode: 0o644})
	tw.Write([]byte("abcd"))
	tw.Flush()
	raw := tarBuf.Bytes()
	// Replace the padding after "abcd" by non-zero garbage, then a valid-looking end.
	hostile := append([]byte{}, raw...)
	garbage := bytes.Repeat([]byte("Z"), 1024)
	hostile = append(hostile[:512+4], garbage...)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	gz.Write(hostile)
	gz.Close()
	base, dir := extractDir(t)
	err := ExtractArchive(&buf, dir, ArchiveLimits{})
	if err == nil {
		t.Fatal("accepted")
	}
	if !errors.Is(err, ErrSnapshotCorrupt) && !errors.Is(err, ErrSnapshotTruncated) {
		t.Errorf("error %v", err)
	}
	checkConfined(t, base, dir)
	if b, _ := os.ReadFile(filepath.Join(dir, "short")); len(b) > 4 {
		t.Errorf("wrote %d bytes for a 4-byte entry", len(b))
	}
}

func TestExtractArchiveNotSnapshot(t *testing.T) {
	var gzText bytes.Buffer
	gz := gzip.NewWriter(&gzText)
	gz.Write(bytes.Repeat([]byte("this is no tar archive\n"), 100))
	gz.Close()
	var gzEmpty, gzShort bytes.Buffer
	gz = gzip.NewWriter(&gzEmpty)
	gz.Close()
	gz = gzip.NewWriter(&gzShort)
	gz.Write([]byte("hello\n"))
	gz.Close()
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"text", []byte("ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.1\n"), "not a ctdoctor snapshot (expected .tar.gz)"},
		{"empty", nil, "not a ctdoctor snapshot (expected .tar.gz)"},
		{"gzip of text", gzText.Bytes(), "not a ctdoctor snapshot (expected .tar.gz)"},
		{"empty gzip", gzEmpty.Bytes(), "not a ctdoctor snapshot (expected .tar.gz)"},
		{"short gzip of text", gzShort.Bytes(), "not a ctdoctor snapshot (expected .tar.gz): the gzip data is not a tar archive"},
		{"one byte", []byte{0x1f}, "not a ctdoctor snapshot (expected .tar.gz)"},
		{"short text", []byte("hi\n"), "not a ctdoctor snapshot (expected .tar.gz)"},
	} {
		_, dir := extractDir(t)
		err := ExtractArchive(bytes.NewReader(tc.in), dir, ArchiveLimits{})
		if !errors.Is(err, ErrNotSnapshot) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestExtractArchiveTruncated(t *testing.T) {
	data := writeTestArchive(t, testFiles(t))
	for _, cut := range []int{2, 5, 9, 10, 11, 20, 100, 600, len(data) / 4, len(data) / 2, 3 * len(data) / 4, len(data) - 100, len(data) - 9, len(data) - 8, len(data) - 4, len(data) - 1} {
		base, dir := extractDir(t)
		err := ExtractArchive(bytes.NewReader(data[:cut]), dir, ArchiveLimits{})
		if !errors.Is(err, ErrSnapshotTruncated) || !strings.Contains(err.Error(), "snapshot archive is truncated (unexpected EOF") {
			t.Errorf("cut at %d of %d: %v", cut, len(data), err)
		}
		if cut == len(data)/2 && !strings.Contains(err.Error(), "bytes of proc/net/nf_conntrack)") {
			t.Errorf("cut at %d of %d: %v (want the entry named)", cut, len(data), err)
		}
		checkConfined(t, base, dir)
	}
	// A flipped byte in the compressed data.
	for _, at := range []int{len(data) / 3, len(data) - 6} {
		bad := append([]byte{}, data...)
		bad[at] ^= 0x55
		_, dir := extractDir(t)
		if err := ExtractArchive(bytes.NewReader(bad), dir, ArchiveLimits{}); err == nil {
			t.Errorf("byte %d flipped: accepted", at)
		}
	}
}

func TestOpenSnapshot(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	tmpRoot := os.TempDir()
	files := testFiles(t)
	base := t.TempDir()
	good := filepath.Join(base, "good.tar.gz")
	os.WriteFile(good, writeTestArchive(t, files), 0o644)

	root, cleanup, err := OpenSnapshot(good)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "proc/sys/net/netfilter/nf_conntrack_max")); string(got) != "262144\n" {
		t.Errorf("extracted max %q", got)
	}
	cleanup()
	cleanup()
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cleanup left %s", root)
	}

	// A directory is used in place.
	dirSnap := filepath.Join(base, "dir")
	os.MkdirAll(filepath.Join(dirSnap, "ctdoctor"), 0o755)
	os.WriteFile(filepath.Join(dirSnap, "ctdoctor", "meta.json"), []byte("{}"), 0o644)
	root, cleanup, err = OpenSnapshot(dirSnap)
	if err != nil || root != dirSnap {
		t.Fatalf("dir: %q %v", root, err)
	}
	cleanup()
	if _, err := os.Stat(dirSnap); err != nil {
		t.Errorf("cleanup removed the snapshot directory: %v", err)
	}

	noMeta := map[string][]byte{}
	for k, v := range files {
		if k != "ctdoctor/meta.json" {
			noMeta[k] = v
		}
	}
	noMetaFile := filepath.Join(base, "nometa.tar.gz")
	os.WriteFile(noMetaFile, writeTestArchive(t, noMeta), 0o644)
	textFile := filepath.Join(base, "flows.txt")
	os.WriteFile(textFile, []byte("ipv4     2 tcp      6 10 CLOSE src=1.1.1.1\n"), 0o644)
	emptyDir := filepath.Join(base, "empty")
	os.Mkdir(emptyDir, 0o755)
	for _, tc := range []struct{ path, want string }{
		{noMetaFile, "not a ctdoctor snapshot: no ctdoctor/meta.json"},
		{emptyDir, "not a ctdoctor snapshot: no ctdoctor/meta.json"},
		{textFile, "not a ctdoctor snapshot (expected .tar.gz)"},
		{filepath.Join(base, "missing.tar.gz"), "no such file"},
	} {
		_, cleanup, err := OpenSnapshot(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.path, err, tc.want)
		}
		cleanup()
	}
	if left, _ := os.ReadDir(tmpRoot); len(left) != 0 {
		t.Errorf("temporary directories left behind: %v", left)
	}
}

// TestExtractArchiveSystemTar checks interoperability with GNU/BSD tar in
// both directions, when a tar binary is installed.
func TestExtractArchiveSystemTar(t *testing.T) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("no tar binary")
	}
	files := testFiles(t)
	// Ours, extracted by tar.
	archive := filepath.Join(t.TempDir(), "s.tar.gz")
	os.WriteFile(archive, writeTestArchive(t, files), 0o644)
	out := t.TempDir()
	if b, err := exec.Command(tarBin, "-xzf", archive, "-C", out).CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v\n%s", err, b)
	}
	for name, want := range files {
		if got, _ := os.ReadFile(filepath.Join(out, name)); !bytes.Equal(got, want) {
			t.Errorf("tar extracted %s differently", name)
		}
	}
	// tar's ("./"-prefixed names, directory entries), extracted by us.
	again := filepath.Join(t.TempDir(), "t.tar.gz")
	if b, err := exec.Command(tarBin, "-czf", again, "-C", out, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar -c: %v\n%s", err, b)
	}
	fh, err := os.Open(again)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	base, dir := extractDir(t)
	if err := ExtractArchive(fh, dir, ArchiveLimits{}); err != nil {
		t.Fatal(err)
	}
	checkConfined(t, base, dir)
	got := readTree(t, dir)
	for name, want := range files {
		if !bytes.Equal(got[name], want) {
			t.Errorf("%s differs after tar -c", name)
		}
	}
}

// fuzzSeeds are the in-code seeds of FuzzExtractArchive (the committed
// corpus under testdata/fuzz holds more).
func fuzzSeeds(t testing.TB) [][]byte {
	valid := writeTestArchive(t, map[string][]byte{"ctdoctor/meta.json": []byte("{}"), "proc/net/nf_conntrack": []byte("ipv4 2 tcp 6 1 CLOSE\n")})
	return [][]byte{
		valid,
		valid[:len(valid)/2],
		buildTarGz(t, []rawEntry{reg("../x", "evil")}),
		buildTarGz(t, []rawEntry{{hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"}}, reg("l/x", "evil")}),
		buildTarGz(t, []rawEntry{{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir}}, reg("d/f", "data"), reg("./d/g", "")}),
		[]byte("not gzip"),
	}
}

func FuzzExtractArchive(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	lim := ArchiveLimits{MaxTotal: 1 << 20, MaxFile: 1 << 19, MaxEntries: 64}
	f.Fuzz(func(t *testing.T, data []byte) {
		base, dir := extractDir(t)
		err := ExtractArchive(bytes.NewReader(data), dir, lim)
		checkConfined(t, base, dir)
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}

// TestExtractArchiveTrailingData accepts a pax global header and record
// padding after the end marker, and rejects a flood of data after it.
func TestExtractArchiveTrailingData(t *testing.T) {
	build := func(trailing int) []byte {
		var tarBuf bytes.Buffer
		tw := tar.NewWriter(&tarBuf)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "git"}})
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "ctdoctor/meta.json", Size: 2, Mode: 0o600})
		tw.Write([]byte("{}"))
		tw.Close()
		tarBuf.Write(make([]byte, trailing))
		var buf bytes.Buffer
		gz := gzip.NewWriter(&buf)
		gz.Write(tarBuf.Bytes())
		gz.Close()
		return buf.Bytes()
	}
	_, dir := extractDir(t)
	if err := ExtractArchive(bytes.NewReader(build(10240)), dir, ArchiveLimits{}); err != nil {
		t.Errorf("padded archive: %v", err)
	}
	if got := readTree(t, dir)["ctdoctor/meta.json"]; string(got) != "{}" {
		t.Errorf("meta.json = %q", got)
	}
	_, dir = extractDir(t)
	if err := ExtractArchive(bytes.NewReader(build(2<<20)), dir, ArchiveLimits{}); !errors.Is(err, ErrArchiveLimit) {
		t.Errorf("2 MiB after the end: %v", err)
	}
}

// FuzzExtractTar fuzzes the tar layer: the input is compressed in the
// target, so mutations reach the tar headers instead of breaking the
// deflate stream.
func FuzzExtractTar(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		if zr, err := gzip.NewReader(bytes.NewReader(s)); err == nil {
			if raw, err := io.ReadAll(zr); err == nil || len(raw) > 0 {
				f.Add(raw)
			}
		}
	}
	lim := ArchiveLimits{MaxTotal: 1 << 20, MaxFile: 1 << 19, MaxEntries: 64}
	f.Fuzz(func(t *testing.T, data []byte) {
		var buf bytes.Buffer
		gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		gz.Write(data)
		gz.Close()
		base, dir := extractDir(t)
		err := ExtractArchive(&buf, dir, lim)
		checkConfined(t, base, dir)
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}
