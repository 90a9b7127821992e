package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/internal/testutil"
)

// The test binary doubles as the worker: Run execs it with this variable.
const workerEnv = "LAMINA_BENCH_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		os.Exit(WorkerMain(os.Args[1:], os.Stdin, os.Stdout))
	}
	code := m.Run()
	testutil.RemoveBinaries()
	os.Exit(code)
}

func tinySpec() Spec {
	return Spec{
		Seed: 7, Layers: 3, TreeFiles: 40, BigDirEntries: 20, BigFileBytes: 1 << 20,
		RandReads: 50, CopyUpFiles: 5, CreateFiles: 10, RenameFiles: 5,
		LookupFiles: 5, LookupDepth: 3, GoSrc: filepath.Join(defaultGoSrc(), "unicode", "utf8"),
		ScaleLayers: []int{1, 2, 4}, CopyUpSizes: []int64{4096, 65536}, ScaleLookups: 5,
	}
}

// testDrivers returns every driver usable here. overlay and fuse-overlayfs
// are required under LAMINA_REQUIRE_PRIVILEGED=1 (make deps installs
// them); laminafs is measured when it builds and mounts a union.
func testDrivers(t *testing.T) []driver.Driver {
	t.Helper()
	var ds []driver.Driver
	for _, name := range driver.Names() {
		var d driver.Driver
		var err error
		if name == "laminafs" {
			d, err = driver.ByName(name, testutil.Binary(t, "laminafs"))
		} else {
			d, err = driver.ByName(name, "")
		}
		if err != nil {
			t.Fatal(err)
		}
		aerr := d.Available()
		if aerr == nil && name == "laminafs" {
			aerr = probe(t, d)
		}
		if aerr != nil {
			if (name == "overlay" || name == "fuse-overlayfs") && os.Getenv("LAMINA_REQUIRE_PRIVILEGED") == "1" {
				t.Fatalf("%s: %v, and LAMINA_REQUIRE_PRIVILEGED=1 (run make deps)", name, aerr)
			}
			t.Logf("not measuring %s: %v", name, aerr)
			continue
		}
		ds = append(ds, d)
	}
	return ds
}

// probe mounts a one-file union with d and reads the file back.
func probe(t *testing.T, d driver.Driver) error {
	dir := t.TempDir()
	l := driver.Layers{Lower: []string{filepath.Join(dir, "l")}, Upper: filepath.Join(dir, "u"), Work: filepath.Join(dir, "w")}
	mnt := filepath.Join(dir, "m")
	for _, p := range append(l.Lower, l.Upper, l.Work, mnt) {
		if err := os.Mkdir(p, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(l.Lower[0], "x"), []byte("x"), 0o644); err != nil {
		return err
	}
	m, err := d.Mount(l, mnt)
	if err != nil {
		return err
	}
	defer m.Unmount()
	b, err := os.ReadFile(filepath.Join(mnt, "x"))
	if err == nil && string(b) != "x" {
		err = errors.New("probe file reads wrong")
	}
	return err
}

func runTiny(t *testing.T, drivers []driver.Driver, workloads ...string) *Report {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := Config{
		Spec: tinySpec(), Dir: dir, Drivers: drivers, Workloads: workloads, Runs: 1,
		Worker: []string{exe}, WorkerEnv: []string{workerEnv + "=1"}, Timeout: time.Minute,
	}
	rep, err := Run(context.Background(), cfg)
	assertNoMounts(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestRunAllDrivers runs the whole harness on a tiny fixture with every
// installed driver and checks the results, the JSON and the plot.
func TestRunAllDrivers(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.RequireCommand(t, "fuse-overlayfs", true)
	drivers := testDrivers(t)
	rep := runTiny(t, drivers)

	var names []string
	for _, d := range drivers {
		names = append(names, d.Name())
	}
	spec := tinySpec()
	jobs := len(Workloads()) - 2 + len(spec.ScaleLayers) + len(spec.CopyUpSizes)
	if got, want := len(rep.Results), jobs*len(drivers); got != want {
		t.Fatalf("%d results, want %d (%d jobs × %v)", got, want, jobs, names)
	}
	for _, c := range rep.Results {
		if len(c.Errors) > 0 {
			t.Errorf("%s %s %d: errors: %v", c.Driver, c.Workload, c.Param, c.Errors)
		}
		if c.Driver == "unionfs-fuse" {
			continue // checked below: it does not understand whiteouts
		}
		if len(c.Wrong) > 0 {
			t.Errorf("%s %s %d: wrong: %v", c.Driver, c.Workload, c.Param, c.Wrong)
		}
		if len(c.Seconds) != 1 || c.Median <= 0 {
			t.Errorf("%s %s %d: seconds %v", c.Driver, c.Workload, c.Param, c.Seconds)
		}
		if c.Driver == "overlay" && c.Ratio != 1 {
			t.Errorf("overlay %s: ratio %v, want 1", c.Workload, c.Ratio)
		}
	}
	if slices.Contains(names, "unionfs-fuse") {
		// The correctness guard: unionfs-fuse shows whiteouts as devices
		// and ignores the opaque directory, and must be flagged for it.
		if c := rep.Cell("stat-all", "unionfs-fuse", 0); c == nil || len(c.Wrong) == 0 {
			t.Errorf("unionfs-fuse stat-all not flagged wrong: %+v", c)
		}
	}
	checkJSON(t, rep)
	checkPlot(t, rep)
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	for _, w := range WorkloadNames() {
		if !strings.Contains(table.String(), "| "+w) {
			t.Errorf("table has no row for %s", w)
		}
	}
}

// TestFixtureDeterministic builds the same spec twice and compares bytes.
func TestFixtureDeterministic(t *testing.T) {
	testutil.RequirePrivileged(t) // whiteouts are devices, opaque is trusted.*
	a, _, err := Prepare(filepath.Join(t.TempDir(), "a"), tinySpec(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, built, err := Prepare(filepath.Join(t.TempDir(), "b"), tinySpec(), nil)
	if err != nil || !built {
		t.Fatal(err, built)
	}
	if a.Expect != b.Expect || a.Hash != b.Hash {
		t.Fatalf("expectations differ: %+v vs %+v", a.Expect, b.Expect)
	}
	for _, rel := range []string{"l/2/big.bin", "l/2/tree/d00/s0/f00003", "l/1/tree/d00/s0/f00003", "l/0/tree/d00/s2/n00000"} {
		x, err1 := os.ReadFile(filepath.Join(a.Dir, rel))
		y, err2 := os.ReadFile(filepath.Join(b.Dir, rel))
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs (%v, %v)", rel, err1, err2)
		}
	}
	// A second Prepare of the same dir reuses the fixture.
	if _, built, err := Prepare(a.Dir, tinySpec(), nil); err != nil || built {
		t.Errorf("rebuilt an up-to-date fixture: %v %v", built, err)
	}
	// The native driver's merge is an independent reading of the layers:
	// it must see what the fixture says a union shows.
	flat := t.TempDir()
	if err := driver.MergeLayers(a.Lower, flat, true); err != nil {
		t.Fatal(err)
	}
	tc, err := countTree(filepath.Join(flat, treeDir))
	if err != nil {
		t.Fatal(err)
	}
	if tc.Files != a.Expect.TreeFiles || tc.Dirs != a.Expect.TreeDirs || tc.Other != 0 {
		t.Errorf("merged tree %+v, fixture expects %d files %d dirs", tc, a.Expect.TreeFiles, a.Expect.TreeDirs)
	}
}

func checkJSON(t *testing.T, rep *Report) {
	t.Helper()
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(buf.Bytes()))
	dec.DisallowUnknownFields()
	var back Report
	if err := dec.Decode(&back); err != nil {
		t.Fatalf("decode report: %v", err)
	}
	if back.Schema != Schema || len(back.Results) != len(rep.Results) || back.Machine.Kernel == "" {
		t.Errorf("report did not round-trip: schema %q, %d results", back.Schema, len(back.Results))
	}
	// The documented field names (docs/bench.md).
	var raw map[string]any
	if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema", "started", "finished", "machine", "spec", "runs", "drivers", "results"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("report has no %q", k)
		}
	}
	cell := raw["results"].([]any)[0].(map[string]any)
	for _, k := range []string{"workload", "driver", "seconds", "min", "median", "max"} {
		if _, ok := cell[k]; !ok {
			t.Errorf("result has no %q", k)
		}
	}
}

func checkPlot(t *testing.T, rep *Report) {
	t.Helper()
	var buf bytes.Buffer
	if err := rep.WritePlot(&buf); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&buf)
	elems := map[string]int{}
	root := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("plot is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			elems[se.Name.Local]++
		}
	}
	if root != "svg" || elems["rect"] < 2 || elems["polyline"] == 0 {
		t.Errorf("plot: root %q, elements %v", root, elems)
	}
}

// assertNoMounts fails t if anything is still mounted under dir.
func assertNoMounts(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			t.Errorf("mount left behind: %s", line)
		}
	}
}
