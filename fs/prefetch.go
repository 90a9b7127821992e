package fs

import (
	"path"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// prefetcher reads lower listings ahead of a walk of the union (find, du,
// a stat of every file), on one background goroutine per union, so that
// the walk finds them ready: the reading is done on the other CPU while
// the kernel and the walker handle the parent.
//
// Listings asked for come first, the rest after: a readdirplus of a
// directory looks up each of its subdirectories at once, and that needs
// the subdirectory's listing (for its opaque marker and redirect), while
// the stats of its entries are needed only when the walk gets into it.
// After that, for each listing asked for, its stats and the listings of
// its subdirectories (so that the walk, when it gets into a directory,
// finds what the readdirplus of it needs, not the reading of them just
// begun); no deeper, so a listing never sets off more than its own
// subdirectories and theirs, read but not stat'ed. This work is done in
// the order a depth-first walk needs it: that of the directories asked
// for last (the deepest) first. Stats go in chunks, so that a listing
// asked for meanwhile waits for one chunk at most, not for the stat of a
// whole large directory. One goroutine, not one per task: with several,
// a listing the walk waits for would share the CPU with stats it does not
// need yet. The goroutine ends when it has nothing left to do.
//
// A listing still queued when someone needs it is not waited for: the
// first to claim it (layerIndex.claim) reads it.
type prefetcher struct {
	mu     sync.Mutex // guards the fields below; taken last, after u.mu
	lists  []listTask // listings asked for, in order
	later  []task     // listings and stats to do ahead, in order
	ins    int        // where in later the work of the listings asked for last goes
	active bool       // the worker goroutine is running
}

// task is a listing to read ahead or a listing to stat.
type task struct {
	list *listTask
	stat *statTask
}

// listTask is a lower directory to read.
type listTask struct {
	l     *layerIndex
	rel   string
	asked bool // asked for (prefetchSubdirs), not read ahead
}

// statTask is a listing whose entries are to be stat'ed.
type statTask struct {
	l    *layerIndex
	rel  string
	d    *dirIndex
	next int // index in d.names of the next entry to stat
}

// statChunk is how many entries the worker stats before it looks for a
// listing to read.
const statChunk = 32

// list queues the reading of the listings rels of layer l.
func (p *prefetcher) list(l *layerIndex, rels []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, rel := range rels {
		p.lists = append(p.lists, listTask{l: l, rel: rel, asked: true})
	}
	p.ins = 0
	p.startLocked()
}

// stat queues the stat of the entries of listing d (directory rel of
// layer l), unless it is queued or done already: first in line if urgent
// (a lookup just read it and a readdirplus of it is likely next), last
// otherwise.
func (p *prefetcher) stat(l *layerIndex, rel string, d *dirIndex, urgent bool) {
	if d.missing || len(d.names) == 0 || d.statted.Swap(true) {
		return
	}
	t := task{stat: &statTask{l: l, rel: rel, d: d}}
	p.mu.Lock()
	defer p.mu.Unlock()
	if urgent {
		p.later = slices.Insert(p.later, 0, t)
		p.ins++
	} else {
		p.insertLocked(t)
	}
	p.startLocked()
}

// insertLocked queues t after the work of the listings asked for last.
//
// Preconditions: p.mu is held.
func (p *prefetcher) insertLocked(t task) {
	p.later = slices.Insert(p.later, p.ins, t)
	p.ins++
}

// subdirs queues the reading ahead of the subdirectories of listing d
// (directory rel of layer l).
func (p *prefetcher) subdirs(l *layerIndex, rel string, d *dirIndex) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range d.names {
		if d.entries[name].typ == unix.S_IFDIR {
			p.insertLocked(task{list: &listTask{l: l, rel: path.Join(rel, name)}})
		}
	}
}

// startLocked starts the worker if it is not running.
//
// Preconditions: p.mu is held.
func (p *prefetcher) startLocked() {
	if !p.active {
		p.active = true
		go p.work()
	}
}

// work runs queued tasks until there are none left.
func (p *prefetcher) work() {
	for {
		p.mu.Lock()
		switch {
		case len(p.lists) > 0:
			t := p.lists[0]
			p.lists = p.lists[1:]
			p.mu.Unlock()
			p.read(t)
		case len(p.later) > 0:
			t := p.later[0]
			p.later = p.later[1:]
			p.ins = max(p.ins-1, 0)
			p.mu.Unlock()
			if t.list != nil {
				p.read(*t.list)
			} else if !t.stat.chunk() {
				p.mu.Lock()
				p.later = slices.Insert(p.later, 0, t)
				p.ins++
				p.mu.Unlock()
			}
		default:
			p.active = false
			p.lists, p.later = nil, nil
			p.mu.Unlock()
			return
		}
	}
}

// read reads the listing of t if nobody has started to. A listing asked
// for (read now or before) then has its subdirectories read ahead and
// its entries stat'ed.
func (p *prefetcher) read(t listTask) {
	d, mine := t.l.claim(t.rel)
	if mine {
		t.l.fill(d, t.rel, nil)
		close(d.ready)
	}
	if !t.asked {
		return
	}
	select {
	case <-d.ready:
	default:
		return // someone else reads it, and queues its stat (layerIndex.dir)
	}
	if !d.statted.Load() {
		p.stat(t.l, t.rel, d, false)
		p.subdirs(t.l, t.rel, d)
	}
}

// chunk stats the next statChunk entries of t, relative to the open
// directory (a stat by full path would walk the whole path again), and
// reports whether t is done. Entries someone stat'ed already are
// skipped. The directory is not kept open between chunks: tasks put
// aside for more urgent ones would hold a descriptor each.
func (t *statTask) chunk() bool {
	fd, err := unix.Open(t.l.abs(t.rel), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return true
	}
	defer unix.Close(fd)
	names := t.d.names
	end := min(t.next+statChunk, len(names))
	for _, name := range names[t.next:end] {
		e := t.d.entries[name]
		if e.st.Load() != nil {
			continue
		}
		st := new(unix.Stat_t)
		if unix.Fstatat(fd, name, st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			e.st.CompareAndSwap(nil, st)
		}
	}
	t.next = end
	return t.next == len(names)
}
