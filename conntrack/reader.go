package conntrack

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// LineError is a parse error with the 1-based line number it occurred on.
type LineError struct {
	Line int
	Text string // the offending line, shortened
	Err  error
}

func (e *LineError) Error() string {
	return fmt.Sprintf("line %d: %v: %q", e.Line, e.Err, e.Text)
}

func (e *LineError) Unwrap() error { return e.Err }

// ErrNoEntries is returned by [ReadAll] when the input has lines but not
// one of them is a conntrack entry (a wrong file, a binary, an error
// message captured instead of a listing). An empty input is not an error:
// it is the listing of an empty table.
var ErrNoEntries = errors.New("no conntrack entries in the input")

// errLineTooLong is the reason a line over maxLine bytes is skipped.
var errLineTooLong = errors.New("line longer than 1 MiB")

// maxLine bounds one line; longer ones are skipped, not held in memory.
const maxLine = 1 << 20

// MaxSkippedLines is how many skipped line numbers [ReadStats] keeps.
const MaxSkippedLines = 5

// ReadStats says what a [Reader] made of its input: enough for a caller to
// tell "an empty table" from "nothing was read" and to say how many lines
// it could not use.
type ReadStats struct {
	Format Format `json:"-"`    // the format of the first entry (FormatUnknown if none)
	Gzip   bool   `json:"gzip"` // the input was gzip-compressed (recognised by its magic bytes)
	// Lines is the number of lines read, blank lines and comments included.
	Lines int `json:"lines"`
	// Entries is the number of entries parsed.
	Entries int `json:"entries"`
	// Skipped is the number of non-blank lines that are neither an entry,
	// a '#' comment nor conntrack-tools' "N flow entries have been shown."
	// summary: foreign text, damaged entries, lines over 1 MiB.
	Skipped int `json:"skipped"`
	// SkippedLines are the 1-based numbers of the first MaxSkippedLines
	// skipped lines.
	SkippedLines []int `json:"skipped_lines,omitempty"`
	// Sample is the first skipped line, shortened to 120 bytes (it may
	// hold any bytes: print it with %q), and SampleError why it was skipped.
	Sample      string `json:"sample,omitempty"`
	SampleError string `json:"sample_error,omitempty"`
	// First is the first skipped line's error ("line 7: truncated entry
	// …: \"…\""), nil when none was skipped.
	First *LineError `json:"-"`
	// Summaries counts conntrack-tools' "conntrack v1.4.7
	// (conntrack-tools): N flow entries have been shown." lines, which
	// `conntrack -L 2>&1` mixes into the listing; Shown is the sum of
	// their N, conntrack's own count of what it printed.
	Summaries int `json:"summaries,omitempty"`
	Shown     int `json:"shown,omitempty"`
	// Rejoined counts entries that such a summary had cut in two (see
	// [Reader]) and that were put back together.
	Rejoined int `json:"rejoined,omitempty"`
}

// String sums the stats up in one line, e.g. "61 lines read: 60 entries,
// 1 skipped (line 7: \"GET / HTTP/1.1\": not a conntrack entry …)".
func (s ReadStats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s read", s.Lines, plural(s.Lines, "line", "lines"))
	if s.Gzip {
		b.WriteString(" (gzip)")
	}
	fmt.Fprintf(&b, ": %d %s, %d skipped", s.Entries, plural(s.Entries, "entry", "entries"), s.Skipped)
	if s.Skipped > 0 {
		nums := make([]string, len(s.SkippedLines))
		for i, n := range s.SkippedLines {
			nums[i] = strconv.Itoa(n)
		}
		more := ""
		if s.Skipped > len(s.SkippedLines) {
			more = ", …"
		}
		fmt.Fprintf(&b, " (%s %s%s; first %q: %s)", plural(len(nums), "line", "lines"), strings.Join(nums, ", "), more,
			s.Sample, s.SampleError)
	}
	if s.Summaries > 0 {
		fmt.Fprintf(&b, "; conntrack said %d %s shown", s.Shown, plural(s.Shown, "entry was", "entries were"))
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// Reader reads conntrack entries from text in any of the known formats
// (each line's own: concatenated captures may mix them), gzip-compressed
// or not. Blank lines and `#` comments are ignored; any other line that is
// not an entry is skipped and counted (see [ReadStats]).
//
// conntrack-tools prints its "conntrack v1.4.7 (conntrack-tools): N flow
// entries have been shown." summary on stderr. Captured with
// `conntrack -L 2>&1`, it lands wherever stdout's buffer was last flushed:
// at the start of a line, or in the middle of one, splitting an entry in
// two around it ("… dst=10conntrack v1.4.7 (…): N flow entries have been
// shown.\n.1.0.4 type=0 …"). The Reader removes the summary and joins the
// two halves when together they make an entry.
type Reader struct {
	src io.Reader
	br  *bufio.Reader
	st  ReadStats
	err error // sticky: a read or gzip error ends the input

	buf     []byte // the current line
	cur     []byte // a copy of the current line, kept while the next one is read
	joined  []byte // an entry's first half, cut by a spliced summary
	pending []byte // a line read ahead, to be handled next
	pendNo  int
	hasPend bool
}

// NewReader returns a Reader over r.
func NewReader(r io.Reader) *Reader {
	return &Reader{src: r}
}

// Format returns the detected format (FormatUnknown before the first entry).
func (r *Reader) Format() Format { return r.st.Format }

// Lines returns the number of lines read so far.
func (r *Reader) Lines() int { return r.st.Lines }

// Flows returns the number of entries parsed so far.
func (r *Reader) Flows() int { return r.st.Entries }

// Skipped returns the number of lines skipped so far.
func (r *Reader) Skipped() int { return r.st.Skipped }

// Stats returns what was read so far.
func (r *Reader) Stats() ReadStats {
	s := r.st
	s.SkippedLines = append([]int(nil), s.SkippedLines...)
	return s
}

// start opens the input, unwrapping gzip when it starts with the magic bytes.
func (r *Reader) start() error {
	br := bufio.NewReaderSize(r.src, 256*1024)
	magic, err := br.Peek(2)
	if err != nil && err != io.EOF {
		return fmt.Errorf("read: %w", err)
	}
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		r.st.Gzip = true
		br = bufio.NewReaderSize(zr, 256*1024)
	}
	r.br = br
	return nil
}

// readLine returns the next line without its newline and its number; long
// is set (and the line empty) for a line over maxLine, which is discarded.
func (r *Reader) readLine() (line []byte, no int, long bool, err error) {
	if r.hasPend {
		r.hasPend = false
		return r.pending, r.pendNo, false, nil
	}
	if r.br == nil {
		if err := r.start(); err != nil {
			return nil, 0, false, err
		}
	}
	r.buf = r.buf[:0]
	any := false
	for {
		chunk, err := r.br.ReadSlice('\n')
		any = any || len(chunk) > 0
		if !long {
			if len(r.buf)+len(chunk) > maxLine+1 {
				long, r.buf = true, r.buf[:0]
			} else {
				r.buf = append(r.buf, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if !any {
				return nil, 0, false, io.EOF
			}
			break // a last line without a newline
		}
		if err != nil {
			where := "read"
			if r.st.Gzip {
				where = "gzip"
			}
			return nil, 0, false, fmt.Errorf("%s, after line %d: %w", where, r.st.Lines, err)
		}
		break
	}
	r.st.Lines++
	return bytes.TrimRight(r.buf, "\r\n"), r.st.Lines, long, nil
}

// Next parses the next entry into f. It returns io.EOF at the end of the
// input; a *LineError for a skipped line (see [ReadStats.Skipped]), after
// which Next can be called again to go on with the following line; and any
// other error (a read error, damaged gzip data) for the end of the input.
// The stats count every skipped line, including a conntrack-tools message
// other than the summary that was spliced into an entry: Next returns the
// rejoined entry then, not a LineError.
func (r *Reader) Next(f *Flow) error {
	if r.err != nil {
		return r.err
	}
	for {
		line, no, long, err := r.readLine()
		if err != nil {
			r.err = err
			return err
		}
		if long {
			return r.skip(no, nil, errLineTooLong)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		i := bytes.Index(line, toolsTag)
		if i < 0 {
			return r.parse(no, line, f)
		}
		start := bytes.LastIndex(line[:i], []byte("conntrack v"))
		if start < 0 {
			start = 0
		}
		summary := r.summary(line[start:])
		if len(bytes.TrimSpace(line[:start])) == 0 {
			if summary {
				continue
			}
			return r.skip(no, line, errToolsMessage)
		}
		return r.spliced(no, line, start, summary, f)
	}
}

// spliced handles a line with a conntrack-tools message after some text:
// the message cut a line in two, and the line's second half is the next
// line. The halves are joined when together they make an entry.
func (r *Reader) spliced(no int, line []byte, start int, summary bool, f *Flow) error {
	r.cur = append(r.cur[:0], line...) // reading the next line reuses line's buffer
	prefix, msg := r.cur[:start], r.cur[start:]
	r.joined = append(r.joined[:0], prefix...)
	next, nno, nlong, err := r.readLine()
	switch {
	case err == io.EOF:
	case err != nil:
		r.err = err
		return err
	case nlong:
		le := r.skip(no, r.cur, ErrUnknownFormat)
		r.skip(nno, nil, errLineTooLong)
		return le
	default:
		r.joined = append(r.joined, next...)
		if ParseLine(bytes.TrimSpace(r.joined), f) == nil {
			if !summary {
				r.skip(no, msg, errToolsMessage)
			}
			r.st.Rejoined++
			r.entry(r.joined)
			return nil
		}
		// Not one entry cut in two: the next line stands on its own.
		r.pending = append(r.pending[:0], next...)
		r.pendNo, r.hasPend = nno, true
	}
	if err := ParseLine(bytes.TrimSpace(prefix), f); err != nil {
		return r.skip(no, r.cur, err)
	}
	if !summary {
		r.skip(no, msg, errToolsMessage)
	}
	r.entry(prefix)
	return nil
}

// parse parses one line that holds no conntrack-tools message.
func (r *Reader) parse(no int, line []byte, f *Flow) error {
	if err := ParseLine(line, f); err != nil {
		return r.skip(no, line, err)
	}
	r.entry(line)
	return nil
}

func (r *Reader) entry(line []byte) {
	if r.st.Format == FormatUnknown {
		r.st.Format = DetectFormat(bytes.TrimSpace(line))
	}
	r.st.Entries++
}

// skip counts a skipped line and returns its LineError.
func (r *Reader) skip(no int, line []byte, err error) error {
	le := &LineError{Line: no, Text: short(line), Err: err}
	r.st.Skipped++
	if len(r.st.SkippedLines) < MaxSkippedLines {
		r.st.SkippedLines = append(r.st.SkippedLines, no)
	}
	if r.st.First == nil {
		r.st.First = le
		r.st.Sample, r.st.SampleError = le.Text, err.Error()
	}
	return le
}

// toolsTag marks conntrack-tools' own messages: "conntrack v1.4.7 (conntrack-tools): …".
var toolsTag = []byte("(conntrack-tools): ")

var errToolsMessage = errors.New("a conntrack-tools message, not an entry")

// summary reports whether msg is conntrack-tools' "N flow entries have
// been shown." summary, and counts it.
func (r *Reader) summary(msg []byte) bool {
	_, rest, _ := bytes.Cut(msg, toolsTag)
	num, tail, _ := bytes.Cut(bytes.TrimSpace(rest), []byte(" "))
	if !isDigits(num) || !bytes.Equal(tail, []byte("flow entries have been shown.")) {
		return false
	}
	n, err := strconv.Atoi(string(num))
	if err != nil || n < 0 {
		return false
	}
	r.st.Summaries++
	if r.st.Shown > int(^uint(0)>>1)-n {
		r.st.Shown = int(^uint(0) >> 1)
	} else {
		r.st.Shown += n
	}
	return true
}

func short(b []byte) string {
	if len(b) > 120 {
		return string(b[:120]) + "…"
	}
	return string(b)
}

// ReadAll returns a Source over r: every entry of a listing in any known
// format, gzip'd or not, skipping the lines that are not entries (see
// [Reader]). Nothing parsed from an input with non-blank lines is an error
// wrapping [ErrNoEntries] and the first line's *LineError; a read or gzip
// error stops it.
func ReadAll(r io.Reader) Source {
	return ReadAllStats(r, nil)
}

// ReadAllStats is [ReadAll] that also records in st, when not nil, what
// it read (set when the Source returns, error or not).
func ReadAllStats(r io.Reader, st *ReadStats) Source {
	return func(fn func(*Flow) error) error {
		rd := NewReader(r)
		if st != nil {
			defer func() { *st = rd.Stats() }()
		}
		var f Flow
		for {
			err := rd.Next(&f)
			var le *LineError
			switch {
			case err == io.EOF:
				if rd.st.Entries == 0 && rd.st.Skipped > 0 {
					return fmt.Errorf("%w: %d %s read, %d skipped; first %w", ErrNoEntries,
						rd.st.Lines, plural(rd.st.Lines, "line", "lines"), rd.st.Skipped, rd.st.First)
				}
				return nil
			case errors.As(err, &le):
				continue
			case err != nil:
				return err
			}
			if err := fn(&f); err != nil {
				return err
			}
		}
	}
}
