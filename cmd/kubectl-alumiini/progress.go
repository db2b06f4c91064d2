package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress is a spinner on one line of a terminal while a command waits.
// It prints nothing when w is not a terminal: the phase lines on stdout
// are what logs and scripts get.
type progress struct {
	done chan struct{}
	wg   sync.WaitGroup
}

func newProgress(w io.Writer, what string) *progress {
	p := &progress{done: make(chan struct{})}
	if !isTerminal(w) {
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		frames := `|/-\`
		start := time.Now()
		t := time.NewTicker(150 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			fmt.Fprintf(w, "\r%c %s (%s)\x1b[K", frames[i%len(frames)], what, time.Since(start).Round(time.Second))
			select {
			case <-p.done:
				fmt.Fprint(w, "\r\x1b[K")
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// stop clears the line; calling it twice is fine.
func (p *progress) stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.wg.Wait()
}
