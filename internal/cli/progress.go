package cli

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/render"
)

// statusLine repaints one line on a terminal's stderr every 250 ms, once
// half a second has passed, with what line says for the time elapsed (""
// clears it), until done; on anything but a terminal it does nothing.
type statusLine struct {
	stop, ended chan struct{}
}

func startStatusLine(w io.Writer, line func(elapsed time.Duration) string) *statusLine {
	s := &statusLine{}
	if !isTerminal(w) {
		return s
	}
	s.stop, s.ended = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.ended)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		start := time.Now()
		shown := false
		for {
			select {
			case <-s.stop:
				if shown {
					fmt.Fprint(w, "\r\x1b[K")
				}
				return
			case <-t.C:
				el := time.Since(start)
				if el <= 500*time.Millisecond {
					continue
				}
				switch l := line(el); {
				case l != "":
					fmt.Fprint(w, "\r\x1b[K"+render.Truncate(l, render.Width(w)-1))
					shown = true
				case shown:
					fmt.Fprint(w, "\r\x1b[K")
					shown = false
				}
			}
		}
	}()
	return s
}

// active reports whether the line is painted (stderr is a terminal).
func (s *statusLine) active() bool { return s.stop != nil }

// done ends the line and clears it.
func (s *statusLine) done() {
	if s.stop != nil {
		close(s.stop)
		<-s.ended
		s.stop = nil
	}
}

// progress shows what is being done, with a running count of entries, on
// a terminal's stderr once it has taken longer than half a second; it
// prints nothing when stderr is not a terminal.
type progress struct {
	stage atomic.Pointer[string] // nil: nothing under way
	n     atomic.Int64
	line  *statusLine
}

// newProgress starts the progress line showing what ("" for nothing yet);
// update and tick feed it, done ends it.
func newProgress(w io.Writer, what string) *progress {
	p := &progress{}
	if what != "" {
		p.stage.Store(&what)
	}
	p.line = startStatusLine(w, func(time.Duration) string {
		switch st := p.stage.Load(); {
		case st == nil:
			return ""
		case p.n.Load() > 0:
			return fmt.Sprintf("%s… %d", *st, p.n.Load())
		default:
			return *st + "…"
		}
	})
	return p
}

// update follows the diagnosis (doctor.Options.Progress).
func (p *progress) update(e doctor.Progress) {
	if !p.line.active() {
		return
	}
	if e.Done {
		p.stage.Store(nil)
	} else {
		st := e.Stage
		p.stage.Store(&st)
	}
	p.n.Store(e.Entries)
}

// tick counts one entry.
func (p *progress) tick() {
	if p.line.active() {
		p.n.Add(1)
	}
}

// done ends the progress line and clears it.
func (p *progress) done() { p.line.done() }
