package cli

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// progress shows a running count on a terminal's stderr for anything that
// takes longer than half a second; it prints nothing when stderr is not a
// terminal.
type progress struct {
	w     io.Writer
	what  string
	n     atomic.Int64
	stop  chan struct{}
	ended chan struct{}
}

func newProgress(w io.Writer, what string) *progress {
	p := &progress{w: w, what: what}
	if !isTerminal(w) {
		return p
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
				if time.Since(start) > 500*time.Millisecond {
					fmt.Fprintf(w, "\r\x1b[K%s… %d", p.what, p.n.Load())
					shown = true
				}
			}
		}
	}()
	return p
}

func (p *progress) tick() {
	if p.stop != nil {
		p.n.Add(1)
	}
}

func (p *progress) done() {
	if p.stop != nil {
		close(p.stop)
		<-p.ended
	}
}
