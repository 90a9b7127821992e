package runtime

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Logs are docker's json-file format, one JSON object per line:
//
//	{"log":"hello\n","stream":"stdout","time":"2026-11-23T10:00:00.000000000Z"}
//
// A line longer than maxLogLine is split, the pieces without "\n", as
// docker does.

const maxLogLine = 16 << 10

type logEntry struct {
	Log    string    `json:"log"`
	Stream string    `json:"stream"`
	Time   time.Time `json:"time"`
}

// logFile appends entries to a container's log; safe for several streams.
type logFile struct {
	mu sync.Mutex // guards f and writes to it
	f  *os.File
}

func openLogFile(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("container log: %w", err)
	}
	return &logFile{f: f}, nil
}

func (l *logFile) write(stream string, line []byte) {
	b, _ := json.Marshal(logEntry{Log: string(line), Stream: stream, Time: time.Now().UTC()})
	l.mu.Lock()
	_, _ = l.f.Write(append(b, '\n'))
	l.mu.Unlock()
}

func (l *logFile) Close() error { return l.f.Close() }

// lineSplitter turns a stream of bytes into log lines.
type lineSplitter struct {
	log    *logFile
	stream string
	buf    []byte
}

func (s *lineSplitter) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		s.log.write(s.stream, s.buf[:i+1])
		s.buf = s.buf[i+1:]
	}
	for len(s.buf) >= maxLogLine {
		s.log.write(s.stream, s.buf[:maxLogLine])
		s.buf = s.buf[maxLogLine:]
	}
	return len(p), nil
}

// flush writes a last partial line.
func (s *lineSplitter) flush() {
	if len(s.buf) > 0 {
		s.log.write(s.stream, s.buf)
		s.buf = nil
	}
}

// LogOptions select what ReadLogs prints.
type LogOptions struct {
	Tail       int  // last N lines; < 0 = all
	Timestamps bool // prefix each line with its RFC 3339 time
	Follow     bool
	Since      time.Time
}

// ReadLogs copies c's log to stdout and stderr. With Follow it keeps
// reading until the container has stopped and the log is drained.
func (s *Store) ReadLogs(c *Container, o LogOptions, stdout, stderr io.Writer) error {
	f, err := os.Open(c.File("ctr.log"))
	if os.IsNotExist(err) {
		if !o.Follow {
			return nil
		}
		for !s.isStopped(c) {
			if f, err = os.Open(c.File("ctr.log")); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if f == nil {
			return nil
		}
	} else if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	defer f.Close()
	emit := func(e logEntry) {
		if !o.Since.IsZero() && e.Time.Before(o.Since) {
			return
		}
		w := stdout
		if e.Stream == "stderr" {
			w = stderr
		}
		if o.Timestamps {
			fmt.Fprintf(w, "%s %s", e.Time.Format(time.RFC3339Nano), e.Log)
		} else {
			io.WriteString(w, e.Log)
		}
	}
	r := bufio.NewReader(f)
	var pending []byte
	readAvailable := func(collect func(logEntry)) {
		for {
			line, err := r.ReadBytes('\n')
			pending = append(pending, line...)
			if err != nil {
				return // partial line stays pending until completed
			}
			var e logEntry
			if json.Unmarshal(pending, &e) == nil {
				collect(e)
			}
			pending = pending[:0]
		}
	}
	if o.Tail >= 0 {
		var ring []logEntry
		readAvailable(func(e logEntry) {
			ring = append(ring, e)
			if len(ring) > o.Tail {
				ring = ring[1:]
			}
		})
		for _, e := range ring {
			emit(e)
		}
	} else {
		readAvailable(emit)
	}
	if !o.Follow {
		return nil
	}
	for {
		stopped := s.isStopped(c)
		readAvailable(emit)
		if stopped {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Store) isStopped(c *Container) bool {
	if _, err := os.Stat(c.dir); err != nil {
		return true
	}
	return !s.MonitorAlive(c)
}
