package conntrack

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
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

// Reader reads conntrack entries from text in any of the known formats,
// detected from the first entry line. Blank lines, `#` comments and the
// "conntrack v1.4.7 (conntrack-tools): N flow entries have been shown."
// trailer are skipped.
type Reader struct {
	sc     *bufio.Scanner
	format Format
	line   int
	flows  int
}

// NewReader returns a Reader over r.
func NewReader(r io.Reader) *Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256*1024), 1<<20)
	return &Reader{sc: sc}
}

// Format returns the detected format (FormatUnknown before the first entry).
func (r *Reader) Format() Format { return r.format }

// Lines returns the number of lines read so far.
func (r *Reader) Lines() int { return r.line }

// Flows returns the number of entries parsed so far.
func (r *Reader) Flows() int { return r.flows }

var trailer = []byte("(conntrack-tools):")

// Next parses the next entry into f. It returns io.EOF at the end of the
// input, and a *LineError for a line that cannot be parsed (a line cut
// short by truncation included); the entries before it stay valid.
func (r *Reader) Next(f *Flow) error {
	for r.sc.Scan() {
		r.line++
		line := bytes.TrimSpace(r.sc.Bytes())
		if len(line) == 0 || line[0] == '#' || bytes.Contains(line, trailer) {
			continue
		}
		if r.format == FormatUnknown {
			r.format = DetectFormat(line)
			if r.format == FormatUnknown {
				return &LineError{Line: r.line, Text: short(line), Err: ErrUnknownFormat}
			}
		}
		var err error
		switch r.format {
		case FormatProc, FormatConntrack:
			// Mixed files (e.g. concatenated captures) are tolerated per line.
			switch DetectFormat(line) {
			case FormatProc:
				err = parseListLine(line, f, true)
			case FormatConntrack:
				err = parseListLine(line, f, false)
			default:
				err = ErrUnknownFormat
			}
		case FormatSave:
			err = parseSaveLine(line, f)
		}
		if err != nil {
			return &LineError{Line: r.line, Text: short(line), Err: err}
		}
		r.flows++
		return nil
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return &LineError{Line: r.line + 1, Err: errors.New("line longer than 1 MiB")}
		}
		return err
	}
	return io.EOF
}

func short(b []byte) string {
	if len(b) > 120 {
		return string(b[:120]) + "…"
	}
	return string(b)
}

// ReadAll returns a Source over r. The first parse error stops it.
func ReadAll(r io.Reader) Source {
	return func(fn func(*Flow) error) error {
		rd := NewReader(r)
		var f Flow
		for {
			err := rd.Next(&f)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if err := fn(&f); err != nil {
				return err
			}
		}
	}
}
