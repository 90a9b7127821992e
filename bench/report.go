package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/lamina-project/lamina/driver"
	"golang.org/x/sys/unix"
)

// Schema names the JSON layout of Report; it changes when a field changes
// meaning or goes away (adding fields keeps it).
const Schema = "lamina-bench/v1"

// Report is the result of Run, written as JSON by WriteJSON.
type Report struct {
	Schema   string       `json:"schema"`
	Started  time.Time    `json:"started"`
	Finished time.Time    `json:"finished"`
	Machine  Machine      `json:"machine"`
	Spec     Spec         `json:"spec"`
	Runs     int          `json:"runs"`
	Drivers  []DriverInfo `json:"drivers"`
	Results  []Cell       `json:"results"`
	Notes    []string     `json:"notes,omitempty"`
}

// Machine describes where the numbers were taken.
type Machine struct {
	Kernel    string `json:"kernel"`
	CPU       string `json:"cpu"`
	CPUs      int    `json:"cpus"`
	MemBytes  uint64 `json:"mem_bytes"`
	ScratchFS string `json:"scratch_fs"` // filesystem type under Dir
	LoadAvg   string `json:"loadavg"`    // /proc/loadavg at the start
	// LoadAvgEnd is /proc/loadavg at the end: other work on the machine
	// skews every number.
	LoadAvgEnd string `json:"loadavg_end,omitempty"`
	Go         string `json:"go"`
}

// DriverInfo is one requested driver.
type DriverInfo struct {
	Name      string `json:"name"`
	Version   string `json:"version,omitempty"`
	Available bool   `json:"available"`
	Note      string `json:"note,omitempty"` // why it was skipped
}

// Cell is one driver on one job: the seconds of each run that completed,
// and what went wrong in the others.
type Cell struct {
	Workload  string    `json:"workload"`
	Param     int64     `json:"param,omitempty"`      // scaling point
	ParamUnit string    `json:"param_unit,omitempty"` // "layers" or "bytes"
	Driver    string    `json:"driver"`
	Seconds   []float64 `json:"seconds"` // completed runs, in run order
	Min       float64   `json:"min"`
	Median    float64   `json:"median"`
	Max       float64   `json:"max"`
	Ops       int       `json:"ops,omitempty"`              // operations per run (lookups, reads)
	Ratio     float64   `json:"ratio_to_overlay,omitempty"` // median / overlay's median
	Wrong     []string  `json:"wrong,omitempty"`            // correctness failures, one per bad run
	Errors    []string  `json:"errors,omitempty"`           // runs that could not be measured
}

// OK reports whether every run completed with a correct result.
func (c *Cell) OK() bool { return len(c.Wrong) == 0 && len(c.Errors) == 0 && len(c.Seconds) > 0 }

func (c *Cell) add(s sample) {
	switch {
	case s.err != "":
		c.Errors = append(c.Errors, s.err)
	default:
		c.Seconds = append(c.Seconds, s.seconds)
		if s.res.Ops > 0 {
			c.Ops = s.res.Ops
		}
		if s.wrong != "" {
			c.Wrong = append(c.Wrong, s.wrong)
		}
	}
}

func (c *Cell) finish() {
	if len(c.Seconds) == 0 {
		return
	}
	v := slices.Clone(c.Seconds)
	sort.Float64s(v)
	c.Min, c.Max = v[0], v[len(v)-1]
	if n := len(v); n%2 == 1 {
		c.Median = v[n/2]
	} else {
		c.Median = (v[n/2-1] + v[n/2]) / 2
	}
}

// WriteJSON writes r, indented.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Cell returns the cell of driver on workload at param, or nil.
func (r *Report) Cell(workload, driver string, param int64) *Cell {
	for i := range r.Results {
		c := &r.Results[i]
		if c.Workload == workload && c.Driver == driver && c.Param == param {
			return c
		}
	}
	return nil
}

// measured lists the drivers with results, in column order.
func (r *Report) measured() []string {
	var names []string
	for _, d := range r.Drivers {
		if d.Available {
			names = append(names, d.Name)
		}
	}
	return names
}

// WriteTable writes the results as a Markdown table: one row per job, one
// column per driver, each cell "median (ratio to overlay) min–max" in
// seconds; lookup-scaling cells are microseconds per lookup. A cell with a
// wrong result is marked "WRONG¹" with the reason below the table, one
// whose runs failed "ERR".
func (r *Report) WriteTable(w io.Writer) error {
	drivers := r.measured()
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "| workload | %s |\n|---|%s\n", strings.Join(drivers, " | "), strings.Repeat("---|", len(drivers)))
	var notes []string
	type row struct {
		workload string
		param    int64
		unit     string
	}
	var rows []row
	for _, c := range r.Results {
		k := row{c.Workload, c.Param, c.ParamUnit}
		if !slices.Contains(rows, k) {
			rows = append(rows, k)
		}
	}
	for _, k := range rows {
		name := label(k.workload, k.param, k.unit)
		unit := " (s)"
		if k.workload == "lookup-scaling" || k.workload == "lookup" {
			unit = " (µs/lookup)"
		}
		fmt.Fprintf(bw, "| %s%s |", name, unit)
		for _, d := range drivers {
			c := r.Cell(k.workload, d, k.param)
			if c == nil {
				fmt.Fprint(bw, " – |")
				continue
			}
			fmt.Fprintf(bw, " %s |", c.format(&notes))
		}
		fmt.Fprintln(bw)
	}
	for i, n := range notes {
		fmt.Fprintf(bw, "\n%d. %s", i+1, n)
	}
	if len(notes) > 0 {
		fmt.Fprintln(bw)
	}
	return bw.Flush()
}

func (c *Cell) format(notes *[]string) string {
	if len(c.Seconds) == 0 {
		*notes = append(*notes, fmt.Sprintf("%s %s: %s", c.Driver, c.Workload, strings.Join(uniq(c.Errors), "; ")))
		return fmt.Sprintf("ERR%d", len(*notes))
	}
	scale, prec := 1.0, 3
	if (c.Workload == "lookup-scaling" || c.Workload == "lookup") && c.Ops > 0 {
		scale, prec = 1e6/float64(c.Ops), 1
	}
	s := fmt.Sprintf("%.*f", prec, c.Median*scale)
	if c.Ratio > 0 {
		s += fmt.Sprintf(" (%.2fx)", c.Ratio)
	}
	if len(c.Seconds) > 1 {
		s += fmt.Sprintf(" %.*f–%.*f", prec, c.Min*scale, prec, c.Max*scale)
	}
	if len(c.Wrong) > 0 {
		*notes = append(*notes, fmt.Sprintf("%s %s: wrong result: %s", c.Driver, label(c.Workload, c.Param, c.ParamUnit), strings.Join(uniq(c.Wrong), "; ")))
		s += fmt.Sprintf(" WRONG%d", len(*notes))
	}
	if len(c.Errors) > 0 {
		*notes = append(*notes, fmt.Sprintf("%s %s: %d run(s) failed: %s", c.Driver, label(c.Workload, c.Param, c.ParamUnit), len(c.Errors), strings.Join(uniq(c.Errors), "; ")))
		s += fmt.Sprintf(" ERR%d", len(*notes))
	}
	return s
}

func uniq(s []string) []string {
	var out []string
	for _, x := range s {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func probeMachine(dir string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemBytes = uint64(si.Totalram) * uint64(si.Unit)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.TrimSpace(string(b))
	}
	m.ScratchFS = fsType(dir)
	return m
}

// fsType finds the filesystem holding dir (or its nearest existing
// parent) in /proc/self/mounts: the longest mount point that prefixes it.
func fsType(dir string) string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return ""
	}
	best, typ := "", ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, typ = mp, f[2]+" on "+f[0]
		}
	}
	return typ
}

// driverVersion is the best version string there is for d: the Debian
// package's for peers, the kernel's for overlay, --version for the rest.
func driverVersion(d driver.Driver) string {
	pkg := func(name string) string {
		out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", name).Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	switch d.Name() {
	case "overlay", "native":
		var u unix.Utsname
		if unix.Uname(&u) == nil {
			return "kernel " + unix.ByteSliceToString(u.Release[:])
		}
	case "fuse-overlayfs":
		return pkg("fuse-overlayfs")
	case "unionfs-fuse":
		return pkg("unionfs-fuse")
	}
	if b, ok := d.(driver.FUSEBinary); ok {
		out, err := exec.Command(b.Path, "--version").CombinedOutput()
		if err == nil {
			return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
		}
		return b.Path
	}
	return ""
}
