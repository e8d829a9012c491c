package cli

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/ctdoctor/ctdoctor/doctor"
)

// progress shows what is being done, with a running count of entries, on
// a terminal's stderr once it has taken longer than half a second; it
// prints nothing when stderr is not a terminal.
type progress struct {
	w     io.Writer
	stage atomic.Pointer[string] // nil: nothing under way
	n     atomic.Int64
	stop  chan struct{}
	ended chan struct{}
}

// newProgress starts the progress line showing what ("" for nothing yet);
// update and tick feed it, done ends it.
func newProgress(w io.Writer, what string) *progress {
	p := &progress{w: w}
	if !isTerminal(w) {
		return p
	}
	if what != "" {
		p.stage.Store(&what)
	}
	p.stop, p.ended = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.ended)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		start := time.Now()
		shown := false
		for {
			select {
			case <-p.stop:
				if shown {
					fmt.Fprint(w, "\r\x1b[K")
				}
				return
			case <-t.C:
				if time.Since(start) <= 500*time.Millisecond {
					continue
				}
				switch st := p.stage.Load(); {
				case st == nil:
					if shown {
						fmt.Fprint(w, "\r\x1b[K")
						shown = false
					}
				case p.n.Load() > 0:
					fmt.Fprintf(w, "\r\x1b[K%s… %d", *st, p.n.Load())
					shown = true
				default:
					fmt.Fprintf(w, "\r\x1b[K%s…", *st)
					shown = true
				}
			}
		}
	}()
	return p
}

// update follows the diagnosis (doctor.Options.Progress).
func (p *progress) update(e doctor.Progress) {
	if p.stop == nil {
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
	if p.stop != nil {
		p.n.Add(1)
	}
}

// done ends the progress line and clears it.
func (p *progress) done() {
	if p.stop != nil {
		close(p.stop)
		<-p.ended
		p.stop = nil
	}
}
