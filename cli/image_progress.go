package cli

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/docker/go-units"
	"golang.org/x/sys/unix"
)

// progressReader counts bytes read, for a progress line.
type progressReader struct {
	r io.Reader
	n atomic.Int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}

// withProgress shows "<what>: 12.3MB" on w, refreshed a few times a second,
// when w is a terminal, and nothing when it is piped. The returned function
// stops it and clears the line.
func withProgress(w io.Writer, what string, r io.Reader) (io.Reader, func()) {
	f, ok := w.(*os.File)
	if !ok {
		return r, func() {}
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return r, func() {}
	}
	pr := &progressReader{r: r}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(f, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprintf(f, "\r\033[K%s: %s", what, units.HumanSizeWithPrecision(float64(pr.n.Load()), 3))
			}
		}
	}()
	return pr, func() {
		close(done)
		<-stopped
	}
}
