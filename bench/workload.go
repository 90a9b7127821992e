package bench

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/docker/go-units"
)

// A Workload isolates one union cost. Each is one or more jobs (a scaling
// curve has a job per point); a job is one timed worker operation on a
// fresh mount, with the checks that make a wrong tree fail instead of look
// fast.
type Workload struct {
	Name string
	Desc string
	jobs func(f *Fixture) []job
}

type job struct {
	param     int64    // layer count or file size on a scaling curve, else 0
	paramUnit string   // "layers", "bytes" or ""
	lower     []string // layers, top first; nil means the main fixture
	prepare   []string // untimed worker op after dropping caches
	// warm says prepare warms the storage under the mount; for native,
	// whose storage is the mount's own (a bind mount shares the dentry
	// cache), the op itself is run once instead.
	warm       bool
	op         []string // the timed worker op
	check      func(Result) string
	after      []string // untimed worker op after the timed one
	checkAfter func(Result) string
}

// needle is absent from every source tree, so grep reads every byte.
const needle = "lamina-bench-needle-7f3c9e"

func want(what string, got, exp int64) string {
	if got == exp {
		return ""
	}
	return fmt.Sprintf("%s: saw %d, want %d", what, got, exp)
}

func firstWrong(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func itoa[T int | int64](n T) string { return strconv.FormatInt(int64(n), 10) }

// Workloads returns every workload, in report order.
func Workloads() []Workload {
	return []Workload{
		{"lookup", "lstat of distinct files at the end of a deep path present in every layer (files in the bottom one); lower layers' own caches warm, the union's cold", func(f *Fixture) []job {
			n := f.Spec.LookupFiles
			return []job{{warm: true, prepare: warmLayers(f, f.Lower, n), op: []string{"lookup", f.Expect.DeepPath, itoa(n)},
				check: func(r Result) string { return want("files found", int64(r.Files), int64(n)) }}}
		}},
		{"stat-all", "readdir and lstat of every entry under tree/ and bigdir/", func(f *Fixture) []job {
			e := f.Expect
			return []job{{op: []string{"walk", treeDir, bigDir}, check: func(r Result) string {
				return firstWrong(want("files", int64(r.Files), int64(e.TreeFiles+e.BigDir)),
					want("dirs", int64(r.Dirs), int64(e.TreeDirs)),
					want("other entries (whiteouts shown?)", int64(r.Other), 0))
			}}}
		}},
		{"readdir-big", "names of a merged directory (half in one layer, half in another), without stat, as ls -f", func(f *Fixture) []job {
			return []job{{op: []string{"readdir", bigDir}, check: func(r Result) string {
				return want("entries", int64(r.Entries), int64(f.Expect.BigDir))
			}}}
		}},
		{"seq-read-cold", "sequential read of big.bin (bottom layer), 1 MiB at a time, cold cache", func(f *Fixture) []job {
			return []job{{op: []string{"read", bigFile}, check: bytesRead(f.Spec.BigFileBytes)}}
		}},
		{"seq-read-warm", "the same read again on the same mount after one untimed read", func(f *Fixture) []job {
			return []job{{prepare: []string{"read", bigFile}, op: []string{"read", bigFile}, check: bytesRead(f.Spec.BigFileBytes)}}
		}},
		{"rand-read", "4 KiB preads at seeded random offsets of big.bin, buffered, cold cache", func(f *Fixture) []job {
			n := f.Spec.RandReads
			return []job{{op: []string{"randread", bigFile, itoa(n), itoa(f.Spec.Seed)},
				check: func(r Result) string { return want("reads", int64(r.Ops), int64(n)) }}}
		}},
		{"copy-up-small", "open O_WRONLY and rewrite the first byte of small lower files (one copy-up each)", func(f *Fixture) []job {
			n := f.Spec.CopyUpFiles
			return []job{{op: []string{"copyup", copyUpDir, itoa(n)},
				check:      func(r Result) string { return want("files written", int64(r.Files), int64(n)) },
				after:      []string{"walk", copyUpDir},
				checkAfter: func(r Result) string { return want("files after copy-up", int64(r.Files), int64(n)) }}}
		}},
		{"copy-up-big", "open O_RDWR and rewrite the first byte of big.bin (one copy-up of the whole file)", func(f *Fixture) []job {
			return []job{{op: []string{"copyupbig", bigFile},
				check: func(r Result) string { return want("files written", int64(r.Files), 1) }}}
		}},
		{"create-delete", "create files of 16 bytes in a new directory, then unlink them all", func(f *Fixture) []job {
			n := f.Spec.CreateFiles
			return []job{{op: []string{"createdelete", "cd", itoa(n)},
				check:      func(r Result) string { return want("files created", int64(r.Files), int64(n)) },
				after:      []string{"readdir", "cd"},
				checkAfter: func(r Result) string { return want("entries left", int64(r.Entries), 0) }}}
		}},
		{"rename", "rename lower files within their directory (copy-up or redirect, plus a whiteout each)", func(f *Fixture) []job {
			n := f.Spec.RenameFiles
			return []job{{op: []string{"rename", renameDir, itoa(n)},
				check:      func(r Result) string { return want("files renamed", int64(r.Files), int64(n)) },
				after:      []string{"readdir", renameDir},
				checkAfter: func(r Result) string { return want("entries after rename", int64(r.Entries), int64(n)) }}}
		}},
		{"untar", "GNU tar -xf of the source tree into a new directory of the union", func(f *Fixture) []job {
			return []job{{op: []string{"untar", f.GoTar, "untar"},
				after: []string{"walk", "untar"},
				checkAfter: func(r Result) string {
					return firstWrong(want("files untarred", int64(r.Files), int64(f.Expect.GoFiles)),
						want("dirs untarred", int64(r.Dirs), int64(f.Expect.GoDirs)))
				}}}
		}},
		{"grep", "read every file of the source tree (bottom layer) looking for an absent string, as grep -rF", func(f *Fixture) []job {
			return []job{{op: []string{"grep", goDir, needle}, check: func(r Result) string {
				return firstWrong(want("files", int64(r.Files), int64(f.Expect.GoFiles)),
					want("bytes", r.Bytes, f.Expect.GoBytes), want("matches", int64(r.Matches), 0))
			}}}
		}},
		{"lookup-scaling", "lookup as above against the number of layers the path crosses", func(f *Fixture) []job {
			var jobs []job
			n := f.Spec.ScaleLookups
			for _, layers := range f.Spec.ScaleLayers {
				lower := f.ScaleLower(layers)
				jobs = append(jobs, job{param: int64(layers), paramUnit: "layers", lower: lower,
					warm: true, prepare: warmLayers(f, lower, n),
					op:    []string{"lookup", f.Expect.DeepPath, itoa(n)},
					check: func(r Result) string { return want("files found", int64(r.Files), int64(n)) }})
			}
			return jobs
		}},
		{"copyup-scaling", "copy-up of one lower file against its size", func(f *Fixture) []job {
			var jobs []job
			for _, size := range f.Spec.CopyUpSizes {
				p := sizeFile(size)
				jobs = append(jobs, job{param: size, paramUnit: "bytes",
					op:    []string{"copyupbig", p},
					check: func(r Result) string { return want("files written", int64(r.Files), 1) },
					after: []string{"walk", filepath.Dir(p)},
					checkAfter: func(r Result) string {
						return want("files after copy-up", int64(r.Files), int64(len(f.Spec.CopyUpSizes)))
					}})
			}
			return jobs
		}},
	}
}

func warmLayers(f *Fixture, lower []string, n int) []string {
	return append([]string{"warmlayers", f.Expect.DeepPath, itoa(n)}, lower...)
}

func bytesRead(n int64) func(Result) string {
	return func(r Result) string { return want("bytes read", r.Bytes, n) }
}

// WorkloadNames lists the workloads' names in report order.
func WorkloadNames() []string {
	var names []string
	for _, w := range Workloads() {
		names = append(names, w.Name)
	}
	return names
}

// label names a job's row in the table.
func label(workload string, param int64, unit string) string {
	switch unit {
	case "layers":
		return fmt.Sprintf("%s %d", workload, param)
	case "bytes":
		return fmt.Sprintf("%s %s", workload, units.BytesSize(float64(param)))
	}
	return workload
}
