package top

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/ctdoctor/ctdoctor/watch"
)

// Run shows the screen on the terminal until q, ctrl+c, SIGINT, SIGTERM
// or the end of ctx, and restores the terminal; then it writes what the
// screen was asked to print (a fix, with p) to out. in and out are the
// terminal (nil: the standard input and output).
func Run(ctx context.Context, src watch.Source, o Options, in io.Reader, out io.Writer) error {
	m := NewModel(src, o)
	opts := []tea.ProgramOption{tea.WithContext(ctx)}
	if in != nil {
		opts = append(opts, tea.WithInput(in))
	}
	if out != nil {
		opts = append(opts, tea.WithOutput(out))
	} else {
		out = os.Stdout
	}
	_, err := tea.NewProgram(m, opts...).Run()
	if lines := m.Printed(); lines != nil {
		if _, werr := io.WriteString(out, strings.Join(lines, "\n")+"\n"); werr != nil && err == nil {
			err = werr
		}
	}
	switch {
	case err == nil, errors.Is(err, tea.ErrInterrupted):
		return nil
	case errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil:
		return nil // the context ended: a clean stop
	}
	return fmt.Errorf("terminal: %w", err)
}

// OnceOptions configure [Once].
type OnceOptions struct {
	// Width is the number of columns the text fits in.
	Width  int
	Colors Colors
	// JSON prints each namespace's frame as JSON instead of text.
	JSON bool
	// Wait bounds the wait for complete frames: past it, the frames are
	// printed as they are (a verdict still "diagnosing…", rates unknown).
	Wait time.Duration
	// Poll is how often the source is read while waiting (default 100 ms).
	Poll time.Duration
}

// ErrNoFrame is returned by Once when no namespace had a frame in time.
var ErrNoFrame = errors.New("no frame")

// Once waits until every watched namespace has a complete frame — its
// rates known (a second counter sample) and its first diagnosis done, or
// an error, or gone — or until o.Wait has passed, then prints one frame
// per namespace: as text (at most o.Width columns, every row) or as JSON
// (one indented watch.Frame object after another, which jq reads as a
// stream).
func Once(ctx context.Context, src watch.Source, w io.Writer, o OnceOptions) error {
	if o.Poll <= 0 {
		o.Poll = 100 * time.Millisecond
	}
	deadline := time.Now().Add(o.Wait)
	var frames []watch.Frame
	for {
		frames = frames[:0]
		done := true
		labels := src.Namespaces()
		for _, l := range labels {
			f, ok := src.Frame(l)
			if !ok {
				done = false
				continue
			}
			frames = append(frames, f)
			done = done && complete(&f)
		}
		if (done && len(labels) > 0) || !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.Poll):
		}
	}
	if len(frames) == 0 {
		return fmt.Errorf("%w within %s: no namespace could be read", ErrNoFrame, o.Wait)
	}
	if o.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		for _, f := range frames {
			if err := enc.Encode(f); err != nil {
				return err
			}
		}
		return nil
	}
	var b strings.Builder
	for i, f := range frames {
		if i > 0 {
			b.WriteString("\n")
		}
		ro := RenderOptions{Width: o.Width, Colors: o.Colors, Now: time.Now()}
		if len(frames) > 1 {
			ro.Position = fmt.Sprintf("%d/%d", i+1, len(frames))
		}
		b.WriteString(Render(f, ro))
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// complete reports whether a frame has all a one-shot output shows: the
// rates, the breakdowns and the diagnosis (or why it failed), or an
// error, or the namespace gone.
func complete(f *watch.Frame) bool {
	if f.Err != "" || f.Gone {
		return true
	}
	return !f.Time.IsZero() && f.NewPerSec >= 0 && !f.ListedAt.IsZero() && (f.Report != nil || f.ReportError != "")
}
