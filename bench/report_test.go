package bench

import (
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func syntheticReport() *Report {
	r := &Report{Schema: Schema, Runs: 3, Machine: Machine{Kernel: "6.18", CPUs: 2}, Drivers: []DriverInfo{
		{Name: "overlay", Available: true}, {Name: "peer", Available: true}, {Name: "gone", Note: "skipped: not installed"},
	}}
	add := func(c Cell) {
		c.finish()
		r.Results = append(r.Results, c)
	}
	add(Cell{Workload: "stat-all", Driver: "overlay", Seconds: []float64{1, 3, 2}})
	add(Cell{Workload: "stat-all", Driver: "peer", Seconds: []float64{4, 4}, Wrong: []string{"files: saw 3, want 2"}})
	add(Cell{Workload: "grep", Driver: "overlay", Seconds: []float64{0.5}})
	add(Cell{Workload: "grep", Driver: "peer", Errors: []string{"mount: boom"}})
	for _, n := range []int64{1, 4, 16} {
		add(Cell{Workload: "lookup-scaling", Param: n, ParamUnit: "layers", Driver: "overlay", Seconds: []float64{float64(n) * 1e-3}, Ops: 100})
		add(Cell{Workload: "lookup-scaling", Param: n, ParamUnit: "layers", Driver: "peer", Seconds: []float64{float64(n) * 2e-3}, Ops: 100})
	}
	for _, n := range []int64{4096, 1 << 20} {
		add(Cell{Workload: "copyup-scaling", Param: n, ParamUnit: "bytes", Driver: "overlay", Seconds: []float64{float64(n) * 1e-8}})
	}
	for i := range r.Results {
		c := &r.Results[i]
		if base := r.Cell(c.Workload, "overlay", c.Param); base != nil && base.Median > 0 && c.Median > 0 {
			c.Ratio = c.Median / base.Median
		}
	}
	return r
}

func TestTable(t *testing.T) {
	r := syntheticReport()
	if c := r.Cell("stat-all", "peer", 0); c.Median != 4 || c.Ratio != 2 || c.OK() {
		t.Fatalf("peer stat-all: %+v", c)
	}
	if c := r.Cell("stat-all", "overlay", 0); c.Min != 1 || c.Median != 2 || c.Max != 3 {
		t.Fatalf("overlay stat-all: %+v", c)
	}
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"| workload | overlay | peer |",
		"| stat-all (s) | 2.000 (1.00x) 1.000–3.000 | 4.000 (2.00x) 4.000–4.000 WRONG1 |",
		"| grep (s) | 0.500 (1.00x) | ERR2 |",
		"| lookup-scaling 4 (µs/lookup) | 40.0 (1.00x) | 80.0 (2.00x) |",
		"1. peer stat-all: wrong result: files: saw 3, want 2",
		"2. peer grep: mount: boom",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "gone") {
		t.Errorf("table shows a skipped driver:\n%s", out)
	}
}

func TestPlotWellFormed(t *testing.T) {
	var buf bytes.Buffer
	if err := syntheticReport().WritePlot(&buf); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
	n := 0
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v\n%s", err, buf.String())
		}
		n++
	}
	for _, want := range []string{"<svg", "polyline", "lookup latency", "copy-up time", "stat-all"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("plot lacks %q", want)
		}
	}
}

// TestWorkerChecksBlocks: a reader that gets the wrong bytes fails, which
// is what turns a driver's wrong data into a flagged result.
func TestWorkerChecksBlocks(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big")
	if err := blockFile(p, 64*blockSize+100, 1); err != nil {
		t.Fatal(err)
	}
	res, err := opRead(p)
	if err != nil || res.Bytes != 64*blockSize+100 {
		t.Fatalf("read: %+v %v", res, err)
	}
	if res, err := opRandRead(p, 200, 3); err != nil || res.Ops != 200 {
		t.Fatalf("randread: %+v %v", res, err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Block 5 now claims to be block 9.
	if _, err := f.WriteAt([]byte{9}, 5*blockSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := opRead(p); err == nil {
		t.Error("read of a corrupted file passed")
	}
}
