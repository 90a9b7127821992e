package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lamina-project/lamina/runtime/initproc"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Cgroup is a container's place in the cgroup hierarchies. On a unified
// (v2) host Paths has one entry, ""; on a v1 or hybrid host one entry per
// controller lamina uses. The paths are absolute directories under
// /sys/fs/cgroup, kept in state.json so that exec, pause and rm find them
// after the monitor that made them is gone.
type Cgroup struct {
	V2    bool              `json:"v2,omitempty"`
	Paths map[string]string `json:"paths"`
}

const cgroupRoot = initproc.CgroupRoot

// v1Controllers are the v1 hierarchies a container joins.
var v1Controllers = []string{"memory", "pids", "cpu", "freezer"}

// useV2 reports whether the unified hierarchy has the controllers lamina
// needs (initproc.CgroupV2: init mounts the container's cgroups by the
// same answer).
func useV2() bool { return initproc.CgroupV2() }

// ownCgroup returns the calling process's cgroup path for controller
// ("" for the v2 entry) from /proc/self/cgroup. Containers are placed below
// it, so a container started from inside a limited cgroup stays limited.
func ownCgroup(controller string) string {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "/"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if controller == "" && parts[0] == "0" {
			return parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return parts[2]
			}
		}
	}
	return "/"
}

// mkCgroup makes the cgroup directory p. Its parent is the cgroup all
// containers share, made by the first container and left in place after
// (Destroy); when it goes between being made and p being made in it (an
// older lamina, or a test's cleanup, removing it once empty), it is made
// again. prepare, if set, runs on
// the parent before p is made in it.
func mkCgroup(p string, prepare func(parent string)) error {
	parent := filepath.Dir(p)
	var err error
	for i := 0; i < 5; i++ {
		if err = os.MkdirAll(parent, 0o755); err != nil {
			return err
		}
		if prepare != nil {
			prepare(parent)
		}
		if err = os.Mkdir(p, 0o755); err == nil || errors.Is(err, os.ErrExist) {
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return err
}

// NewCgroup creates the container's cgroups and sets the spec's limits.
func NewCgroup(id string, r *specs.LinuxResources) (*Cgroup, error) {
	cg := &Cgroup{Paths: map[string]string{}}
	if useV2() {
		cg.V2 = true
		p := filepath.Join(cgroupRoot, ownCgroup(""), "lamina", id)
		cg.Paths[""] = p
		enable := func(parent string) {
			_ = os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory +pids +cpu"), 0)
		}
		if err := mkCgroup(p, enable); err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
	} else {
		for _, c := range v1Controllers {
			base := filepath.Join(cgroupRoot, c)
			if _, err := os.Stat(base); err != nil {
				continue // controller not mounted
			}
			p := filepath.Join(base, ownCgroup(c), "lamina", id)
			if err := mkCgroup(p, nil); err != nil {
				_ = cg.Destroy()
				return nil, fmt.Errorf("cgroup %s: %w", c, err)
			}
			cg.Paths[c] = p
		}
	}
	if err := cg.set(r); err != nil {
		_ = cg.Destroy()
		return nil, err
	}
	return cg, nil
}

func (cg *Cgroup) write(controller, file, value string) error {
	dir, ok := cg.Paths[controller]
	if cg.V2 {
		dir, ok = cg.Paths[""]
	}
	if !ok {
		return fmt.Errorf("cgroup controller %s is not available", controller)
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("cgroup: write %s=%s: %w", file, value, err)
	}
	return nil
}

func (cg *Cgroup) read(controller, file string) (string, error) {
	dir := cg.Paths[controller]
	if cg.V2 {
		dir = cg.Paths[""]
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	return strings.TrimSpace(string(b)), err
}

func (cg *Cgroup) set(r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	if m := r.Memory; m != nil && m.Limit != nil {
		if cg.V2 {
			if err := cg.write("memory", "memory.max", strconv.FormatInt(*m.Limit, 10)); err != nil {
				return err
			}
			if m.Swap != nil {
				_ = cg.write("memory", "memory.swap.max", strconv.FormatInt(*m.Swap-*m.Limit, 10))
			}
		} else {
			// v1 wants limit <= memsw at every step: raise memsw first,
			// or lower the limit first, whichever works.
			limit := strconv.FormatInt(*m.Limit, 10)
			if m.Swap != nil {
				// memsw is absent without swap accounting; the limit alone then holds.
				sw := strconv.FormatInt(*m.Swap, 10)
				if cg.write("memory", "memory.memsw.limit_in_bytes", sw) != nil {
					if err := cg.write("memory", "memory.limit_in_bytes", limit); err != nil {
						return err
					}
					_ = cg.write("memory", "memory.memsw.limit_in_bytes", sw)
				}
			}
			if err := cg.write("memory", "memory.limit_in_bytes", limit); err != nil {
				return err
			}
		}
	}
	if c := r.CPU; c != nil && c.Quota != nil && c.Period != nil {
		if cg.V2 {
			if err := cg.write("cpu", "cpu.max", fmt.Sprintf("%d %d", *c.Quota, *c.Period)); err != nil {
				return err
			}
		} else {
			if err := cg.write("cpu", "cpu.cfs_period_us", strconv.FormatUint(*c.Period, 10)); err != nil {
				return err
			}
			if err := cg.write("cpu", "cpu.cfs_quota_us", strconv.FormatInt(*c.Quota, 10)); err != nil {
				return err
			}
		}
	}
	return nil
}

// SetPidsLimit applies the pids limit. It is set once init is ready, just
// before the command is started: init is a Go program whose runtime starts
// several threads, each counted against pids.max, and a low limit must
// bind the container's processes, not lamina's setup.
func (cg *Cgroup) SetPidsLimit(r *specs.LinuxResources) error {
	if r == nil || r.Pids == nil || r.Pids.Limit == nil || *r.Pids.Limit <= 0 {
		return nil
	}
	return cg.write("pids", "pids.max", strconv.FormatInt(*r.Pids.Limit, 10))
}

// Add moves pid (with all its threads) into the container's cgroups.
func (cg *Cgroup) Add(pid int) error {
	for c, dir := range cg.Paths {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("cgroup %s: add %d: %w", c, pid, err)
		}
	}
	return nil
}

// ProcsFiles lists the cgroup.procs files exec writes itself into.
func (cg *Cgroup) ProcsFiles() []string {
	var out []string
	for _, dir := range cg.Paths {
		out = append(out, filepath.Join(dir, "cgroup.procs"))
	}
	return out
}

// Pids lists the processes in the container's cgroup.
func (cg *Cgroup) Pids() ([]int, error) {
	dir := cg.Paths["pids"]
	if cg.V2 {
		dir = cg.Paths[""]
	}
	if dir == "" {
		for _, d := range cg.Paths {
			dir = d
			break
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// Freeze stops every process of the container (pause) and waits until the
// kernel reports the cgroup frozen.
func (cg *Cgroup) Freeze() error { return cg.freeze(true) }

// Thaw resumes a frozen container (unpause).
func (cg *Cgroup) Thaw() error { return cg.freeze(false) }

func (cg *Cgroup) freeze(on bool) error {
	var file, value, want string
	if cg.V2 {
		file, value, want = "cgroup.freeze", "0", "frozen 0"
		if on {
			value, want = "1", "frozen 1"
		}
		if err := cg.write("", file, value); err != nil {
			return err
		}
		file = "cgroup.events"
	} else {
		file, value = "freezer.state", "THAWED"
		if on {
			value = "FROZEN"
		}
		want = value
		if err := cg.write("freezer", file, value); err != nil {
			return err
		}
	}
	for i := 0; i < 1000; i++ {
		s, err := cg.read("freezer", file)
		if err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		if strings.Contains(s, want) {
			return nil
		}
		if !cg.V2 && on && i%50 == 49 {
			// v1 can stay FREEZING while a task is in an unfreezable
			// state; asking again nudges it.
			_ = cg.write("freezer", "freezer.state", "FROZEN")
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("cgroup: freezer did not reach %s", want)
}

// OOMKilled reports whether the kernel's OOM killer killed a process of the
// container.
func (cg *Cgroup) OOMKilled() bool {
	file, key := "memory.oom_control", "oom_kill "
	if cg.V2 {
		file, key = "memory.events", "oom_kill "
	}
	s, err := cg.read("memory", file)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n > 0
		}
	}
	return false
}

// killAll sends SIGKILL to every process in the cgroups and thaws them so
// that the signal is delivered.
func (cg *Cgroup) killAll() {
	for c := range cg.Paths {
		sub := &Cgroup{V2: cg.V2, Paths: map[string]string{c: cg.Paths[c]}}
		if cg.V2 {
			sub.Paths = map[string]string{"": cg.Paths[c], "pids": cg.Paths[c]}
		} else {
			sub.Paths["pids"] = cg.Paths[c]
		}
		if pids, err := sub.Pids(); err == nil {
			for _, p := range pids {
				_ = unix.Kill(p, unix.SIGKILL)
			}
		}
	}
	if _, ok := cg.Paths["freezer"]; ok || cg.V2 {
		_ = cg.Thaw()
	}
}

// Destroy kills what is left in the cgroups and removes them. It is safe on
// a partly created or already removed Cgroup.
func (cg *Cgroup) Destroy() error {
	if cg == nil {
		return nil
	}
	var errs []error
	for c, dir := range cg.Paths {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			continue
		}
		var err error
		for i := 0; i < 200; i++ {
			if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
				err = nil
				break
			}
			if errors.Is(err, unix.EBUSY) {
				if c == "freezer" || cg.V2 {
					_ = cg.Thaw()
				}
				if pids, perr := cg.Pids(); perr == nil {
					for _, p := range pids {
						_ = unix.Kill(p, unix.SIGKILL)
					}
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
		}
		// The shared "lamina" parent stays, as docker's does: making and
		// removing it (four cgroup v1 hierarchies, a memory cgroup among
		// them) with every container cost 0.6-2.5 ms of each lamina run
		// --rm here (three interleaved runs of 100 rounds).
	}
	return errors.Join(errs...)
}

// earlyCgroup is a container's cgroup made, and an init spawned ahead put
// into it, on another goroutine before the container exists: writing a
// pid into a cgroup v1's cgroup.procs waits for an RCU grace period
// (cgroup_threadgroup_rwsem), 6-14 ms here, most of a container's start
// when it is on its path.
type earlyCgroup struct {
	id    string
	pid   int // once done: what join was given
	pidc  chan int
	done  chan struct{}
	cg    *Cgroup       // once done: nil when making or joining it failed
	swept chan struct{} // closed once sweepStale has run, after done
}

func startEarlyCgroup(id string, pid int) *earlyCgroup {
	e := newEarlyCgroup(id)
	e.join(pid)
	return e
}

// newEarlyCgroup starts making container id's cgroups, on a goroutine,
// before the process that join then puts into them is known: the mkdirs
// overlap its spawn. sweepStale runs once e is done, off its path.
func newEarlyCgroup(id string) *earlyCgroup {
	e := &earlyCgroup{id: id, pidc: make(chan int, 1), done: make(chan struct{}), swept: make(chan struct{})}
	go func() {
		cg, err := NewCgroup(id, nil)
		e.pid = <-e.pidc
		switch {
		case err != nil:
		case e.pid <= 0:
			_ = cg.Destroy()
		case cg.Add(e.pid) != nil:
			_ = cg.Destroy()
		default:
			e.cg = cg
		}
		close(e.done)
		if e.cg != nil {
			e.cg.sweepStale()
		}
		close(e.swept)
	}()
	return e
}

// join gives e the pid to put into its cgroups; 0 leaves e without
// cgroups (the process could not be spawned). Call it once.
func (e *earlyCgroup) join(pid int) { e.pidc <- pid }

// drop removes e's cgroup, once it is made, when what was put into it has
// left or died.
func (e *earlyCgroup) drop() {
	<-e.done
	_ = e.cg.Destroy()
}

// staleAge is how long a container's cgroup may stand empty before a
// later start removes it (sweepStale).
const staleAge = time.Minute

// sweepStale removes the container cgroups next to cg's (lamina/<ID>)
// that were made more than staleAge ago and are empty: what a lamina
// killed by SIGKILL while it created its container left behind, its
// monitor having made the cgroups ahead (earlyCgroup). A cgroup in use is
// never empty for that long: a container's init goes in right after its
// cgroup is made, a paused container's processes stay in it, and its
// monitor removes it when the container stops. The kernel refuses to
// remove a cgroup with processes or children in it (EBUSY), whatever the
// age says.
func (cg *Cgroup) sweepStale() {
	for _, dir := range cg.Paths {
		parent := filepath.Dir(dir)
		ents, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		for _, e := range ents {
			p := filepath.Join(parent, e.Name())
			if !e.IsDir() || !isID(e.Name()) || p == dir {
				continue
			}
			if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < staleAge {
				continue
			}
			_ = unix.Rmdir(p)
		}
	}
}
