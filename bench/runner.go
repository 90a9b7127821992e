// Package bench measures union filesystems against each other: it builds a
// deterministic fixture of overlay-format layers once, mounts it with each
// driver (laminafs, kernel overlay, fuse-overlayfs, unionfs-fuse, a plain
// directory), and times workloads that isolate union costs — lookup
// through layers, stat of a tree, merged readdir, reads, copy-up,
// create/delete, rename, untar, grep — plus two scaling curves. Every run
// gets a fresh mount with an empty upper layer and cold caches, the
// workload runs in a separate worker process timed from outside, and its
// result is checked, so a driver showing a wrong tree is flagged, not
// merely fast.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lamina-project/lamina/driver"
	"golang.org/x/sys/unix"
)

// Config says what to run.
type Config struct {
	Spec      Spec
	Dir       string          // scratch: fixture, flat copies, per-run dirs; one filesystem
	Drivers   []driver.Driver // in column order; unavailable ones are skipped with a note
	Workloads []string        // names (Workloads()); empty means all
	Runs      int             // runs per driver and job; default 3
	// Worker is the command line that starts a worker process, which must
	// end up in WorkerMain (lamina: "lamina bench worker").
	Worker    []string
	WorkerEnv []string // extra environment of the worker
	// NoDropCaches skips "sync; echo 3 > /proc/sys/vm/drop_caches"
	// before each run (it needs root).
	NoDropCaches bool
	Timeout      time.Duration // per timed operation; default 15 minutes
	Progress     io.Writer     // progress lines; nil is quiet
}

// Run builds (or reuses) the fixture and runs every job for every
// available driver. It returns a report even when runs failed: failures
// are in the report. Every mount it makes is unmounted before it returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Runs <= 0 {
		cfg.Runs = 3
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Minute
	}
	if len(cfg.Worker) == 0 {
		return nil, errors.New("bench: no worker command")
	}
	var workloads []Workload
	for _, w := range Workloads() {
		if len(cfg.Workloads) == 0 || slices.Contains(cfg.Workloads, w.Name) {
			workloads = append(workloads, w)
		}
	}
	for _, name := range cfg.Workloads {
		if !slices.Contains(WorkloadNames(), name) {
			return nil, fmt.Errorf("bench: unknown workload %q (known: %s)", name, strings.Join(WorkloadNames(), ", "))
		}
	}
	if len(cfg.Drivers) == 0 {
		return nil, errors.New("bench: no drivers")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	r := &runner{cfg: cfg, dir: dir}
	rep := &Report{Schema: Schema, Started: time.Now().UTC(), Machine: probeMachine(dir), Spec: cfg.Spec, Runs: cfg.Runs}

	// Short names throughout: overlay takes all 128 lowerdirs of the
	// scaling curve in one page of mount data.
	r.progress("fixture: checking %s", filepath.Join(dir, "f"))
	fx, built, err := Prepare(filepath.Join(dir, "f"), cfg.Spec, func(s string) { r.progress("fixture: %s", s) })
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	flat := filepath.Join(dir, "flat")
	if built {
		// Flat copies of an older fixture are stale.
		if err := os.RemoveAll(flat); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	r.fx = fx

	var drivers []driver.Driver
	for _, d := range cfg.Drivers {
		info := DriverInfo{Name: d.Name(), Version: driverVersion(d)}
		if err := d.Available(); err != nil {
			info.Note = "skipped: " + err.Error()
			r.progress("%s", info.Note)
		} else {
			info.Available = true
			if n, ok := d.(driver.Native); ok && n.FlatDir == "" {
				n.FlatDir = flat
				d = n
			}
			drivers = append(drivers, d)
		}
		rep.Drivers = append(rep.Drivers, info)
	}
	if !cfg.NoDropCaches && os.Geteuid() != 0 {
		rep.Notes = append(rep.Notes, "caches were not dropped between runs (needs root)")
		cfg.NoDropCaches = true
		r.cfg.NoDropCaches = true
	}

	type cellKey struct {
		workload, driver string
		param            int64
	}
	cells := map[cellKey]*Cell{}
	var order []cellKey
	var jobs []struct {
		w Workload
		j job
	}
	for _, w := range workloads {
		for _, j := range w.jobs(fx) {
			jobs = append(jobs, struct {
				w Workload
				j job
			}{w, j})
			for _, d := range drivers {
				k := cellKey{w.Name, d.Name(), j.param}
				cells[k] = &Cell{Workload: w.Name, Param: j.param, ParamUnit: j.paramUnit, Driver: d.Name()}
				order = append(order, k)
			}
		}
	}
	total := len(jobs) * cfg.Runs * len(drivers)
	step := 0
	// Runs are interleaved (run 1 of every driver, then run 2, ...) so
	// that a burst of load from elsewhere on the machine spreads over the
	// drivers instead of landing on one.
	for _, jb := range jobs {
		for run := 1; run <= cfg.Runs; run++ {
			for _, d := range drivers {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				step++
				name := label(jb.w.Name, jb.j.param, jb.j.paramUnit)
				r.progress("[%d/%d] %s: %s run %d/%d", step, total, d.Name(), name, run, cfg.Runs)
				s := r.once(ctx, d, jb.j)
				c := cells[cellKey{jb.w.Name, d.Name(), jb.j.param}]
				c.add(s)
				if s.err != "" {
					r.progress("%s: %s run %d: error: %s", d.Name(), name, run, s.err)
				} else if s.wrong != "" {
					r.progress("%s: %s run %d: WRONG: %s", d.Name(), name, run, s.wrong)
				}
			}
		}
	}
	for _, c := range cells {
		c.finish()
	}
	for _, k := range order {
		c := cells[k]
		if base, ok := cells[cellKey{k.workload, "overlay", k.param}]; ok && base.Median > 0 && c.Median > 0 {
			c.Ratio = c.Median / base.Median
		}
		rep.Results = append(rep.Results, *c)
	}
	rep.Finished = time.Now().UTC()
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		rep.Machine.LoadAvgEnd = strings.TrimSpace(string(b))
	}
	r.progress("")
	return rep, nil
}

type runner struct {
	cfg Config
	dir string
	fx  *Fixture
}

func (r *runner) progress(format string, args ...any) {
	if r.cfg.Progress == nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if len(msg) > 110 {
		msg = msg[:110]
	}
	fmt.Fprintf(r.cfg.Progress, "\r\033[K%s", msg)
	if strings.Contains(msg, "error") || strings.Contains(msg, "WRONG") || strings.HasPrefix(msg, "skipped") {
		fmt.Fprintln(r.cfg.Progress)
	}
}

// sample is one run of one job on one driver.
type sample struct {
	seconds float64
	res     Result
	err     string // the run failed: no time
	wrong   string // the run finished but saw a wrong tree
}

// once runs job on a fresh mount of d with an empty upper layer and cold
// caches. The mount is gone when it returns.
func (r *runner) once(ctx context.Context, d driver.Driver, j job) (s sample) {
	run := filepath.Join(r.dir, "r")
	if err := os.RemoveAll(run); err != nil {
		return sample{err: err.Error()}
	}
	l := driver.Layers{Lower: j.lower, Upper: filepath.Join(run, "u"), Work: filepath.Join(run, "w")}
	if l.Lower == nil {
		l.Lower = r.fx.Lower
	}
	mnt := filepath.Join(run, "m")
	for _, p := range []string{l.Upper, l.Work, mnt} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return sample{err: err.Error()}
		}
	}
	defer func() {
		if err := os.RemoveAll(run); err != nil && s.err == "" {
			s.err = "cleanup: " + err.Error()
		}
	}()
	m, err := d.Mount(l, mnt)
	if err != nil {
		if n := len(l.Options()); n >= 4096 {
			return sample{err: fmt.Sprintf("%v (mount options are %d bytes, over one page: use a shorter --dir)", err, n)}
		}
		return sample{err: err.Error()}
	}
	defer func() {
		if err := m.Unmount(); err != nil && s.err == "" {
			s.err = err.Error()
		}
	}()
	if err := r.dropCaches(); err != nil {
		return sample{err: err.Error()}
	}
	prepare := j.prepare
	if j.warm && d.Name() == "native" {
		prepare = j.op
	}
	if prepare != nil {
		if _, res, err := r.work(ctx, mnt, prepare); err != nil {
			return sample{err: "prepare: " + err.Error()}
		} else if res.Error != "" {
			return sample{err: "prepare: " + res.Error}
		}
	}
	secs, res, err := r.work(ctx, mnt, j.op)
	if err != nil {
		return sample{err: err.Error()}
	}
	s = sample{seconds: secs, res: res}
	if res.Error != "" {
		// The operation failed on this driver's tree: that is a wrong
		// result, not a harness error.
		s.wrong = res.Error
		return s
	}
	if j.check != nil {
		s.wrong = j.check(res)
	}
	if s.wrong == "" && j.after != nil {
		_, ares, err := r.work(ctx, mnt, j.after)
		switch {
		case err != nil:
			s.err = "check: " + err.Error()
		case ares.Error != "":
			s.wrong = "check: " + ares.Error
		default:
			s.wrong = j.checkAfter(ares)
		}
	}
	return s
}

func (r *runner) dropCaches() error {
	unix.Sync()
	if r.cfg.NoDropCaches {
		return nil
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// work runs one worker op on the mount at root and returns the seconds
// from "go" to its result line.
func (r *runner) work(ctx context.Context, root string, op []string) (float64, Result, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	args := append(append(slices.Clone(r.cfg.Worker[1:]), op[0], root), op[1:]...)
	cmd := exec.CommandContext(ctx, r.cfg.Worker[0], args...)
	cmd.Env = append(append(os.Environ(), r.cfg.WorkerEnv...),
		// Go's async preemption signals turn into FUSE INTERRUPTs, which
		// would measure the client, not the filesystem.
		"GODEBUG=asyncpreemptoff=1")
	cmd.Dir = "/"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, Result{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, Result{}, err
	}
	if err := cmd.Start(); err != nil {
		return 0, Result{}, fmt.Errorf("worker: %w", err)
	}
	br := bufio.NewReader(stdout)
	_, rerr := br.ReadByte() // ready
	var werr error
	var line []byte
	start := time.Now()
	if rerr == nil {
		_, werr = stdin.Write([]byte{'g'})
		line, rerr = br.ReadBytes('\n')
	}
	elapsed := time.Since(start).Seconds()
	stdin.Close()
	waitErr := cmd.Wait()
	if werr != nil || rerr != nil {
		return 0, Result{}, fmt.Errorf("worker %s: %v %v %v: %s", op[0], werr, rerr, waitErr, strings.TrimSpace(stderr.String()))
	}
	var res Result
	if err := json.Unmarshal(line, &res); err != nil {
		return 0, Result{}, fmt.Errorf("worker %s: bad result %q: %w", op[0], line, err)
	}
	if waitErr != nil && res.Error == "" {
		return 0, Result{}, fmt.Errorf("worker %s: %v: %s", op[0], waitErr, strings.TrimSpace(stderr.String()))
	}
	return elapsed, res, nil
}
