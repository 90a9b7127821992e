package layerstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// stage is a private staging directory under tmp/, owned by one live
// process. Ownership is an exclusive flock on tmp/<name>.lock held for the
// stage's whole life, so a sweeper can tell a crashed import's leftovers
// (lock free, or lock file gone) from a running one's (lock held) without
// guessing from timestamps.
//
// Invariant: the directory tmp/<name> exists only while tmp/<name>.lock
// exists, except after a crash of its owner or of a sweeper, in which case
// it is garbage. The owner removes the directory before the lock file; the
// sweeper removes the lock file (holding its lock) before the directory.
type stage struct {
	dir  string
	lock *os.File
}

// newStage creates a staging directory owned by this process.
func (s *Store) newStage() (*stage, error) {
	for range 10 {
		f, err := os.CreateTemp(s.tmpDir(), "stage-*.lock")
		if err != nil {
			return nil, fmt.Errorf("create staging lock: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		// A sweeper may have taken and unlinked the lock between create and
		// flock: only a lock on the file still at that path counts.
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(f.Name(), &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
			f.Close()
			continue
		}
		dir := strings.TrimSuffix(f.Name(), ".lock")
		if err := os.Mkdir(dir, 0o700); err != nil {
			os.Remove(f.Name())
			f.Close()
			return nil, fmt.Errorf("create staging dir: %w", err)
		}
		return &stage{dir: dir, lock: f}, nil
	}
	return nil, errors.New("create staging dir: lost the race for a lock ten times")
}

// path is a path inside the stage.
func (st *stage) path(elem ...string) string {
	return filepath.Join(append([]string{st.dir}, elem...)...)
}

// release removes what is left of the stage and gives up ownership.
func (st *stage) release() {
	os.RemoveAll(st.dir)
	os.Remove(st.lock.Name())
	st.lock.Close()
}

// sweepTmp removes staging dirs and lock files of dead processes, and
// trash left by interrupted deletes, returning what it removed (or, with
// dryRun, would remove), as paths relative to the store root.
func (s *Store) sweepTmp(dryRun bool) ([]string, error) {
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("sweep tmp: %w", err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name()] = true
	}
	var removed []string
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(s.tmpDir(), name)
		if !strings.HasPrefix(name, "stage-") && !strings.HasPrefix(name, "trash-") {
			continue // not ours: other packages may stage in tmp/ too
		}
		switch {
		case strings.HasSuffix(name, ".lock"):
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
				f.Close() // live owner
				continue
			}
			dir := strings.TrimSuffix(p, ".lock")
			removed = append(removed, "tmp/"+name)
			if !dryRun {
				os.Remove(p)
				crashPoint("sweep-lock-removed")
				os.RemoveAll(dir)
			}
			if names[filepath.Base(dir)] {
				removed = append(removed, "tmp/"+filepath.Base(dir))
			}
			f.Close()
		case names[name+".lock"]:
			// Owned stage: handled with its lock file above.
		default:
			// A stage dir whose lock file is gone, or trash. Readdir is no
			// snapshot, so look for the lock again before calling it dead.
			if _, err := os.Lstat(p + ".lock"); err == nil {
				continue
			}
			removed = append(removed, "tmp/"+name)
			if !dryRun {
				os.RemoveAll(p)
			}
		}
	}
	return removed, nil
}
