package host

import (
	"archive/tar"
	"bufio"
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Errors callers can branch on with errors.Is; the errors returned wrap
// them with the entry and the byte counts involved.
var (
	// ErrNotSnapshot: the input is not a ctdoctor snapshot at all (not a
	// gzip stream, not a tar inside, or no ctdoctor/meta.json).
	ErrNotSnapshot = errors.New("not a ctdoctor snapshot")
	// ErrSnapshotTruncated: the archive ends in the middle of the gzip
	// stream, a tar header or a file's data.
	ErrSnapshotTruncated = errors.New("snapshot archive is truncated")
	// ErrSnapshotCorrupt: the compressed data or a tar header is damaged.
	ErrSnapshotCorrupt = errors.New("snapshot archive is corrupt")
	// ErrUnsafeEntry: an entry would escape the extraction directory or is
	// of a type a snapshot never holds (symlink, hard link, device, FIFO…).
	ErrUnsafeEntry = errors.New("unsafe entry in snapshot archive")
	// ErrArchiveLimit: the archive exceeds an [ArchiveLimits] bound.
	ErrArchiveLimit = errors.New("snapshot archive exceeds a size limit")
)

// ArchiveWriter writes a snapshot archive (a gzip'd tar) as a stream:
// nothing but the current entry's copy buffer is held in memory. Entries
// are regular files with mode 0644 and their parent directories with mode
// 0755, owned by uid/gid 0, all stamped with ModTime, so the same content
// gives the same bytes.
//
// Errors are sticky: after a failed call every later call returns the
// same error.
type ArchiveWriter struct {
	// ModTime stamps every entry (truncated to the second); the zero value
	// stamps the Unix epoch. Set it before the first Add call.
	ModTime time.Time

	gz    *gzip.Writer
	tw    *tar.Writer
	names map[string]bool // files and directories written so far; true for a directory
	err   error
}

// NewArchiveWriter returns an ArchiveWriter writing to w. Close must be
// called to finish the archive; it does not close w.
func NewArchiveWriter(w io.Writer) *ArchiveWriter {
	gz := gzip.NewWriter(w) // no name, no mtime in the gzip header: deterministic
	return &ArchiveWriter{gz: gz, tw: tar.NewWriter(gz), names: map[string]bool{}}
}

// CleanArchiveName checks a name for a snapshot archive entry and returns
// it cleaned: relative, forward slashes, no "." or ".." components. A
// leading "./" is allowed and removed; absolute names, ".." components,
// backslashes and NUL bytes are rejected.
func CleanArchiveName(name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("%w: empty name", ErrUnsafeEntry)
	case strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("%w %q: absolute path", ErrUnsafeEntry, name)
	case strings.ContainsAny(name, "\\\x00"):
		return "", fmt.Errorf("%w %q: backslash or NUL in name", ErrUnsafeEntry, name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w %q: \"..\" component", ErrUnsafeEntry, name)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return ".", nil
	}
	return clean, nil
}

func (a *ArchiveWriter) modTime() time.Time {
	if a.ModTime.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return a.ModTime.Truncate(time.Second)
}

// header prepares a file entry: it checks the name, rejects duplicates
// and writes the missing parent directory entries.
func (a *ArchiveWriter) header(name string, size int64) (*tar.Header, error) {
	if a.err != nil {
		return nil, a.err
	}
	if a.gz == nil {
		return nil, errors.New("archive writer is closed")
	}
	clean, err := CleanArchiveName(name)
	if err != nil {
		return nil, fmt.Errorf("add %q: %w", name, err)
	}
	if clean == "." {
		return nil, fmt.Errorf("add %q: not a file name", name)
	}
	if size < 0 {
		return nil, fmt.Errorf("add %s: negative size %d", clean, size)
	}
	if _, dup := a.names[clean]; dup {
		return nil, fmt.Errorf("add %s: already in the archive", clean)
	}
	mt := a.modTime()
	// Parent directories, outermost first.
	for i := 0; i < len(clean); i++ {
		if clean[i] != '/' {
			continue
		}
		dir := clean[:i]
		isDir, seen := a.names[dir]
		if seen && !isDir {
			return nil, fmt.Errorf("add %s: %s is a file in the archive", clean, dir)
		}
		if seen {
			continue
		}
		h := &tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: mt}
		if err := a.tw.WriteHeader(h); err != nil {
			a.err = fmt.Errorf("write archive entry %s: %w", h.Name, err)
			return nil, a.err
		}
		a.names[dir] = true
	}
	a.names[clean] = false
	return &tar.Header{Typeflag: tar.TypeReg, Name: clean, Size: size, Mode: 0o644, ModTime: mt}, nil
}

// AddFile adds a regular file holding data.
func (a *ArchiveWriter) AddFile(name string, data []byte) error {
	h, err := a.header(name, int64(len(data)))
	if err != nil {
		return err
	}
	if err := a.tw.WriteHeader(h); err != nil {
		a.err = fmt.Errorf("write archive entry %s: %w", h.Name, err)
		return a.err
	}
	if _, err := a.tw.Write(data); err != nil {
		a.err = fmt.Errorf("write archive entry %s: %w", h.Name, err)
		return a.err
	}
	return nil
}

// AddStream adds a regular file of exactly size bytes read from r, without
// holding it in memory. It fails if r ends before size bytes; bytes after
// the first size are not read.
func (a *ArchiveWriter) AddStream(name string, size int64, r io.Reader) error {
	h, err := a.header(name, size)
	if err != nil {
		return err
	}
	if err := a.tw.WriteHeader(h); err != nil {
		a.err = fmt.Errorf("write archive entry %s: %w", h.Name, err)
		return a.err
	}
	n, err := io.CopyN(a.tw, r, size)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("source ended after %d of %d bytes", n, size)
		}
		// The tar stream now lacks bytes of this entry: nothing more can be added.
		a.err = fmt.Errorf("write archive entry %s: %w", h.Name, err)
		return a.err
	}
	return nil
}

// AddReader adds a regular file with everything read from r, whose size
// is not known in advance: it is spooled to a temporary file first (then
// removed), so memory stays bounded however large the content is.
func (a *ArchiveWriter) AddReader(name string, r io.Reader) error {
	if a.err != nil {
		return a.err
	}
	tmp, err := os.CreateTemp("", "ctdoctor-spool-*")
	if err != nil {
		return fmt.Errorf("add %s: spool: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	size, err := io.Copy(tmp, r)
	if err != nil {
		return fmt.Errorf("add %s: spool: %w", name, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("add %s: spool: %w", name, err)
	}
	return a.AddStream(name, size, tmp)
}

// Close writes the tar and gzip trailers. It does not close the
// underlying writer.
func (a *ArchiveWriter) Close() error {
	if a.gz == nil {
		return a.err
	}
	gz := a.gz
	a.gz = nil
	if a.err != nil {
		return a.err
	}
	if err := a.tw.Close(); err != nil {
		a.err = fmt.Errorf("finish archive: %w", err)
		return a.err
	}
	if err := gz.Close(); err != nil {
		a.err = fmt.Errorf("finish archive: %w", err)
		return a.err
	}
	return nil
}

// ArchiveLimits bound what ExtractArchive accepts. A zero field takes
// the [DefaultArchiveLimits] value.
type ArchiveLimits struct {
	// MaxTotal bounds the bytes of all files together.
	MaxTotal int64
	// MaxFile bounds the bytes of one file.
	MaxFile int64
	// MaxEntries bounds the number of entries (files and directories).
	MaxEntries int
}

// DefaultArchiveLimits returns the limits for snapshot archives: 4 GiB in
// all, 2 GiB per file (a /proc/net/nf_conntrack of some 10 million
// entries), 10,000 entries.
func DefaultArchiveLimits() ArchiveLimits {
	return ArchiveLimits{MaxTotal: 4 << 30, MaxFile: 2 << 30, MaxEntries: 10000}
}

func (l ArchiveLimits) withDefaults() ArchiveLimits {
	d := DefaultArchiveLimits()
	if l.MaxTotal <= 0 {
		l.MaxTotal = d.MaxTotal
	}
	if l.MaxFile <= 0 {
		l.MaxFile = d.MaxFile
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	return l
}

// maxTrailing bounds the bytes after a tar archive's end marker: record
// padding, 10 KiB with GNU tar's default blocking factor.
const maxTrailing = 1 << 20

// extractor holds the state of one ExtractArchive call.
type extractor struct {
	root  *os.Root
	lim   ArchiveLimits
	total int64  // file bytes written so far
	last  string // the last entry started, for error messages
	ended bool   // the tar end-of-archive marker has been read
	gz    *eofReader
}

// ExtractArchive extracts a snapshot archive read from r into dir, which
// should be a new, empty directory. It is safe on hostile input: only
// regular files and directories are accepted, no entry may have an
// absolute name or a ".." component, links, devices and FIFOs are
// rejected with an error naming the entry, every file is created with
// O_EXCL (mode 0644; directories 0755) through an [os.Root] on dir so
// nothing is ever written outside it, and lim bounds the bytes actually
// copied and the number of entries.
//
// On error, dir may hold part of the archive; the caller removes it.
func ExtractArchive(r io.Reader, dir string, lim ArchiveLimits) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("extract snapshot: %w", err)
	}
	defer root.Close()
	x := &extractor{root: root, lim: lim.withDefaults()}
	return x.run(r)
}

// eofReader records whether the reader under it ended cleanly.
type eofReader struct {
	r   io.Reader
	eof bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.eof = true
	}
	return n, err
}

func (x *extractor) run(r io.Reader) error {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(2)
	switch {
	case len(magic) == 0:
		return fmt.Errorf("%w (expected .tar.gz): the file is empty", ErrNotSnapshot)
	case len(magic) < 2 || magic[0] != 0x1f || magic[1] != 0x8b:
		return fmt.Errorf("%w (expected .tar.gz)", ErrNotSnapshot)
	}
	zr, err := gzip.NewReader(br)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w (unexpected EOF in the gzip header)", ErrSnapshotTruncated)
	case errors.Is(err, gzip.ErrHeader):
		return fmt.Errorf("%w (expected .tar.gz)", ErrNotSnapshot)
	default:
		return fmt.Errorf("read snapshot archive: %w", err)
	}
	defer zr.Close()
	gz := &eofReader{r: zr}
	x.gz = gz
	tr := tar.NewReader(gz)
	entries := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return x.streamError(err, -1)
		}
		entries++
		if entries > x.lim.MaxEntries {
			return fmt.Errorf("%w: more than %d entries (at %q)", ErrArchiveLimit, x.lim.MaxEntries, h.Name)
		}
		x.last = h.Name
		if h.Typeflag == tar.TypeXGlobalHeader {
			// A pax global header (written by `git archive` and some tars) carries no file.
			continue
		}
		if err := x.entry(h, tr); err != nil {
			return err
		}
	}
	if entries == 0 {
		return fmt.Errorf("%w (expected .tar.gz): the gzip data holds no tar entries", ErrNotSnapshot)
	}
	// Read what follows the end-of-archive marker (the zero padding of
	// the last tar record) so the gzip trailer's checksum and length are
	// verified.
	x.ended = true
	n, err := io.Copy(io.Discard, io.LimitReader(gz, maxTrailing+1))
	if err != nil {
		return x.streamError(err, -1)
	}
	if n > maxTrailing {
		return fmt.Errorf("%w: more than %d bytes after the end of the tar archive", ErrArchiveLimit, maxTrailing)
	}
	return nil
}

// streamError turns an error from the gzip or tar reader into one that
// says what happened and where. n is the number of bytes of the current
// entry read so far, or -1 between entries.
func (x *extractor) streamError(err error, n int64) error {
	var where string
	switch {
	case x.ended:
		where = " after the end of the tar archive, in the gzip trailer"
	case n >= 0:
		where = fmt.Sprintf(" after %d bytes of %s", n, x.last)
	case x.last != "":
		where = fmt.Sprintf(" after entry %s", x.last)
	default:
		where = " before the first entry"
	}
	var corrupt flate.CorruptInputError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) && x.gz != nil && x.gz.eof && x.last == "":
		// The gzip stream is whole, but it holds less than one tar header.
		return fmt.Errorf("%w (expected .tar.gz): the gzip data is not a tar archive", ErrNotSnapshot)
	case errors.Is(err, io.ErrUnexpectedEOF) && x.gz != nil && x.gz.eof:
		return fmt.Errorf("%w (the tar data ends%s, although the gzip stream is complete)", ErrSnapshotTruncated, where)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w (unexpected EOF%s)", ErrSnapshotTruncated, where)
	case errors.Is(err, gzip.ErrChecksum):
		return fmt.Errorf("%w (gzip checksum mismatch%s: the data is damaged)", ErrSnapshotCorrupt, where)
	case errors.As(err, &corrupt):
		return fmt.Errorf("%w (bad compressed data%s: %v)", ErrSnapshotCorrupt, where, err)
	case errors.Is(err, gzip.ErrHeader):
		return fmt.Errorf("%w (bad gzip member header%s)", ErrSnapshotCorrupt, where)
	case errors.Is(err, tar.ErrHeader):
		if x.last == "" {
			return fmt.Errorf("%w (expected .tar.gz): the gzip data is not a tar archive", ErrNotSnapshot)
		}
		return fmt.Errorf("%w (bad tar header%s)", ErrSnapshotCorrupt, where)
	}
	return fmt.Errorf("read snapshot archive%s: %w", where, err)
}

func (x *extractor) entry(h *tar.Header, tr *tar.Reader) error {
	name, err := CleanArchiveName(h.Name)
	if err != nil {
		return err
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if h.Size != 0 {
			return fmt.Errorf("%w %q: directory with %d bytes of data", ErrUnsafeEntry, h.Name, h.Size)
		}
		if name == "." {
			return nil
		}
		return x.mkdirAll(name)
	case tar.TypeReg:
		if name == "." {
			return fmt.Errorf("%w %q: a file in place of the top directory", ErrUnsafeEntry, h.Name)
		}
		return x.file(name, h, tr)
	}
	return fmt.Errorf("%w %q: %s entries are not allowed (a snapshot holds only regular files and directories)",
		ErrUnsafeEntry, h.Name, typeName(h.Typeflag))
}

func typeName(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "symbolic link"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "FIFO"
	case tar.TypeCont:
		return "contiguous file"
	case tar.TypeGNUSparse:
		return "sparse file"
	case tar.TypeXGlobalHeader:
		return "pax global header"
	}
	if t >= ' ' && t <= '~' {
		return fmt.Sprintf("type %q", t)
	}
	return fmt.Sprintf("type 0x%02x", t)
}

// mkdirAll creates dir and its parents under the root, refusing to go
// through anything but directories.
func (x *extractor) mkdirAll(dir string) error {
	for i := 0; i <= len(dir); i++ {
		if i < len(dir) && dir[i] != '/' {
			continue
		}
		p := dir[:i]
		err := x.root.Mkdir(p, 0o755)
		if err == nil {
			continue
		}
		if !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("extract %s: %w", x.last, err)
		}
		fi, err := x.root.Lstat(p)
		if err != nil {
			return fmt.Errorf("extract %s: %w", x.last, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w %q: %s is not a directory", ErrUnsafeEntry, x.last, p)
		}
	}
	return nil
}

func (x *extractor) file(name string, h *tar.Header, tr *tar.Reader) error {
	if h.Size > x.lim.MaxFile {
		return fmt.Errorf("%w: %s is %d bytes, more than the %d allowed per file", ErrArchiveLimit, h.Name, h.Size, x.lim.MaxFile)
	}
	if h.Size > x.lim.MaxTotal-x.total {
		return fmt.Errorf("%w: more than %d bytes in all (at %s)", ErrArchiveLimit, x.lim.MaxTotal, h.Name)
	}
	if i := strings.LastIndexByte(name, '/'); i > 0 {
		if err := x.mkdirAll(name[:i]); err != nil {
			return err
		}
	}
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w %q: already extracted (duplicate entry)", ErrUnsafeEntry, h.Name)
		}
		return fmt.Errorf("extract %s: %w", h.Name, err)
	}
	// Count what is actually copied, whatever the header claimed.
	limit := min(x.lim.MaxFile, x.lim.MaxTotal-x.total)
	n, err := io.Copy(f, io.LimitReader(tr, limit+1))
	x.total += n
	if cerr := f.Close(); err == nil && cerr != nil {
		return fmt.Errorf("extract %s: %w", h.Name, cerr)
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("extract %s: %w", h.Name, err)
		}
		return x.streamError(err, n)
	}
	if n > limit {
		if n > x.lim.MaxFile {
			return fmt.Errorf("%w: %s has more than the %d bytes allowed per file", ErrArchiveLimit, h.Name, x.lim.MaxFile)
		}
		return fmt.Errorf("%w: more than %d bytes in all (at %s)", ErrArchiveLimit, x.lim.MaxTotal, h.Name)
	}
	return nil
}

// OpenSnapshot makes a snapshot readable as a root directory. A directory
// (an extracted snapshot) is used as it is and cleanup does nothing; a
// file is extracted, with [DefaultArchiveLimits], to a new temporary
// directory that cleanup removes. Either must hold ctdoctor/meta.json.
// cleanup is never nil, and is safe to call more than once.
func OpenSnapshot(p string) (root string, cleanup func(), err error) {
	noop := func() {}
	fi, err := os.Stat(p)
	if err != nil {
		return "", noop, fmt.Errorf("open snapshot: %w", err)
	}
	if fi.IsDir() {
		if err := checkSnapshotRoot(p); err != nil {
			return "", noop, fmt.Errorf("%s: %w", p, err)
		}
		return p, noop, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return "", noop, fmt.Errorf("open snapshot: %w", err)
	}
	defer f.Close()
	tmp, err := os.MkdirTemp("", "ctdoctor-snapshot-*")
	if err != nil {
		return "", noop, fmt.Errorf("open snapshot %s: %w", p, err)
	}
	cleanup = func() { os.RemoveAll(tmp) }
	if err := ExtractArchive(f, tmp, DefaultArchiveLimits()); err != nil {
		cleanup()
		return "", noop, fmt.Errorf("%s: %w", p, err)
	}
	if err := checkSnapshotRoot(tmp); err != nil {
		cleanup()
		return "", noop, fmt.Errorf("%s: %w", p, err)
	}
	return tmp, cleanup, nil
}

// checkSnapshotRoot checks that dir holds ctdoctor/meta.json as a regular file.
func checkSnapshotRoot(dir string) error {
	fi, err := os.Lstat(filepath.Join(dir, "ctdoctor", "meta.json"))
	if err != nil && errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("check snapshot: %w", err)
	}
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: no ctdoctor/meta.json", ErrNotSnapshot)
	}
	return nil
}
