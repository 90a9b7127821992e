package driver_test

// The conformance suite: one table of cases (suite_cases_test.go), each
// run against every driver. A case builds lower layers (and maybe an upper
// dir), mounts them, applies operations checking each errno, runs its own
// checks, then compares the visible tree and, after unmounting, the upper
// dir with what kernel overlay makes (the expected values come from
// overlay's behaviour and Documentation/filesystems/overlayfs.rst), and
// finally remounts to check the visible tree again.
//
// Kernel overlay and laminafs must pass every case they have the features
// for. fuse-overlayfs is run and reported: its failures are logged and the
// subtest skipped, marked "known deviation" when the case declares it.
// A summary table is printed at the end of the run.
//
//	go test ./driver -run TestConformance -v            # all drivers
//	go test ./driver -run 'TestConformance/.*/laminafs' # one driver

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/internal/fsops"
	"github.com/lamina-project/lamina/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// Modes of created files are part of the expected trees.
	unix.Umask(0o022)
	code := m.Run()
	printSummary()
	testutil.RemoveBinaries()
	os.Exit(code)
}

// dirRename is how a driver renames a directory that exists in a lower
// layer.
type dirRename int

const (
	dirRenameEXDEV    dirRename = iota // fails with EXDEV (overlay without redirect_dir; mv copies)
	dirRenameRedirect                  // works, like overlay's redirect_dir=on
)

// features are what a driver declares it does where overlay's own
// configurations differ; a case that needs a feature the driver lacks is
// skipped, not failed.
type features struct {
	dirRename dirRename
	// keepsLinks: copy-up of a hard-linked lower file keeps the link (overlay
	// index=on); without it the other names keep the old data.
	keepsLinks bool
	// ociWhiteouts: .wh.NAME and .wh..wh..opq in lower layers are understood.
	ociWhiteouts bool
}

// impl is one driver under test.
type impl struct {
	name  string
	get   func(t *testing.T) driver.Driver
	feats features
	// peer drivers are reported, never failed.
	peer bool
	// upperNoise are prefixes of xattrs the driver leaves in the upper dir
	// for itself; they are dropped before comparing upper dirs (so that
	// they do not hide other differences) and reported once, by the case
	// format/no-private-xattrs-in-upper.
	upperNoise []string
}

func impls() []impl {
	return []impl{
		{name: "overlay", get: func(*testing.T) driver.Driver { return fsops.OverlayPlain() },
			feats: features{dirRename: dirRenameEXDEV}},
		{name: "overlay-redirect-index", get: func(*testing.T) driver.Driver { return fsops.Overlay() },
			feats: features{dirRename: dirRenameRedirect, keepsLinks: true}},
		// laminafs renames lower directories fully (as redirect_dir=on) and
		// reads OCI whiteouts. keepsLinks: a lower hard link stays one file
		// after copy-up (as index=on), which is what POSIX programs expect;
		// flip it here if laminafs settles on overlay's default instead.
		{name: "laminafs", get: func(t *testing.T) driver.Driver { return fsops.Laminafs(t) },
			feats: features{dirRename: dirRenameRedirect, keepsLinks: true, ociWhiteouts: true}},
		// fuse-overlayfs 1.x answers EXDEV for lower directories, keeps
		// hard links on copy-up and reads .wh.* whiteouts.
		{name: "fuse-overlayfs", get: func(t *testing.T) driver.Driver {
			testutil.RequireCommand(t, "fuse-overlayfs", false)
			return fsops.FuseOverlayfs()
		}, feats: features{dirRename: dirRenameEXDEV, keepsLinks: true, ociWhiteouts: true}, peer: true,
			upperNoise: []string{"user.fuseoverlayfs."}},
	}
}

// suiteCase is one row of the conformance table.
type suiteCase struct {
	name     string
	lowers   [][]fsops.Spec // top first
	upper    []fsops.Spec   // initial upper dir
	readOnly bool           // no upper dir
	ops      []fsops.Op
	errnos   []unix.Errno // expected outcome of each op; nil: all succeed
	// warm looks every name up (a snapshot) before the ops, so that the
	// kernel holds dentries and inodes for them, as after any ls.
	warm bool
	// check runs after ops, with the union mounted.
	check func(e *env)
	// want is the visible tree afterwards; nil means the initial union,
	// unchanged. Entries whose Mtime is anyTime are not compared on mtime
	// (they were written just now).
	want []fsops.Spec
	// wantUpper is the upper dir afterwards (overlay's on-disk form).
	wantUpper []fsops.Spec
	// noNlink skips visible link counts, where overlay's are an artefact.
	noNlink bool
	// noUpper skips the upper dir comparison, with the reason.
	noUpper string
	// needs says which drivers the case applies to.
	needs func(features) bool
	// deviations are known differences of peer drivers: driver -> why.
	deviations map[string]string
}

// anyTime marks an expected entry whose mtime is not compared.
const anyTime = -1

// env is what a case's check sees. Errorf records a failure (a peer's
// failures become a skip at the end).
type env struct {
	t      *testing.T
	mnt    string
	layers driver.Layers
	drv    impl
	fails  []string
}

func (e *env) Errorf(format string, args ...any) {
	e.fails = append(e.fails, fmt.Sprintf(format, args...))
}

// path is name inside the mount.
func (e *env) path(name string) string { return filepath.Join(e.mnt, name) }

func TestConformance(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			for _, d := range impls() {
				t.Run(d.name, func(t *testing.T) { runCase(t, c, d) })
			}
		})
	}
}

func runCase(t *testing.T, c suiteCase, d impl) {
	if c.needs != nil && !c.needs(d.feats) {
		record(d.name, c.name, "n/a")
		t.Skipf("%s does not declare the feature this case needs", d.name)
	}
	if _, known := c.deviations[d.name]; known && d.peer && testing.Short() {
		record(d.name, c.name, "known deviation")
		t.Skipf("known deviation of %s, not rerun with -short: %s", d.name, c.deviations[d.name])
	}
	drv := d.get(t)
	if err := drv.Available(); err != nil {
		t.Skip(err)
	}
	f := fsops.NewFixture(t, c.lowers, c.upper, c.readOnly)
	mnt, unmount := fsops.MountUntil(t, drv, f.Layers)
	e := &env{t: t, mnt: mnt, layers: f.Layers, drv: d}

	if c.warm {
		if _, err := fsops.Snapshot(mnt); err != nil {
			e.Errorf("snapshot before the ops: %v", err)
		}
	}
	for i, op := range c.ops {
		var want unix.Errno
		if c.errnos != nil {
			want = c.errnos[i]
		}
		if got := fsops.Apply(mnt, op); got != want {
			e.Errorf("op %d (%s): got %s, want %s", i, op, fsops.ErrnoName(got), fsops.ErrnoName(want))
		}
	}
	if c.check != nil {
		c.check(e)
	}
	checkVisible(e, c)
	unmount()
	if !c.readOnly && c.noUpper == "" {
		checkUpper(e, c)
	}
	// What the driver wrote reads back the same after a remount: the state
	// lives in the layers, not in the server's memory.
	if len(e.fails) == 0 {
		mnt2, unmount2 := fsops.MountUntil(t, drv, f.Layers)
		before := len(e.fails)
		e.mnt = mnt2
		checkVisible(e, c)
		unmount2()
		if len(e.fails) > before {
			e.fails = append(e.fails[:before], "after a remount: "+strings.Join(e.fails[before:], "\n"))
		}
	}
	finish(t, c, d, e.fails)
}

// checkVisible compares the visible tree with c.want, and checks what a
// snapshot cannot see: readdir shows each name once, no whiteouts and
// nothing lstat cannot find; no trusted.overlay.* xattr is listed.
func checkVisible(e *env, c suiteCase) {
	want := c.want
	if want == nil {
		want = fsops.Flatten(append([][]fsops.Spec{c.upper}, c.lowers...))
	}
	wantTree, cmp := expected(e.t, want, false)
	cmp.NoNlink = c.noNlink
	got, err := fsops.Snapshot(e.mnt)
	if err != nil {
		e.Errorf("snapshot of the mount: %v", err)
		return
	}
	if diff := cmp.Diff(wantTree, got); diff != nil {
		e.Errorf("visible tree differs (a = want, b = got):\n  %s\ngot:\n%s", strings.Join(diff, "\n  "), got)
	}
	for p, ent := range got {
		full := e.path(p)
		if ent.Type == fsops.TypeDir {
			checkReaddir(e, p, full)
		}
		names, err := listxattr(full)
		if err != nil {
			e.Errorf("%s: listxattr: %v", p, err)
		}
		for _, n := range names {
			if overlayPrivate[n] {
				e.Errorf("%s: listxattr shows overlay's own %s", p, n)
			}
		}
	}
}

// overlayPrivate are the xattrs overlay keeps for itself
// (Documentation/filesystems/overlayfs.rst); a union must never show
// them. Other trusted.overlay.* names a user may set (overlay >= 6.7
// stores them escaped as trusted.overlay.overlay.*).
var overlayPrivate = map[string]bool{
	"trusted.overlay.opaque": true, "trusted.overlay.redirect": true, "trusted.overlay.origin": true,
	"trusted.overlay.impure": true, "trusted.overlay.nlink": true, "trusted.overlay.upper": true,
	"trusted.overlay.metacopy": true, "trusted.overlay.whiteout": true, "trusted.overlay.protattr": true,
	"trusted.overlay.uuid": true,
}

func checkReaddir(e *env, rel, dir string) {
	f, err := os.Open(dir)
	if err != nil {
		e.Errorf("%s: open dir: %v", rel, err)
		return
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		e.Errorf("%s: readdir: %v", rel, err)
		return
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			e.Errorf("%s: readdir lists %q twice", rel, n)
		}
		seen[n] = true
		if strings.HasPrefix(n, ".wh.") {
			e.Errorf("%s: readdir shows the OCI whiteout %q", rel, n)
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, n), &st); err != nil {
			e.Errorf("%s: readdir lists %q but lstat says %v", rel, n, err)
		} else if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
			e.Errorf("%s: readdir shows the whiteout %q", rel, n)
		}
	}
}

func listxattr(p string) ([]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err == unix.ENOTSUP {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

func checkUpper(e *env, c suiteCase) {
	want, cmp := expected(e.t, c.wantUpper, true)
	// index=on also links copied-up files from workdir/index, so upper
	// link counts depend on the driver's hard-link bookkeeping; visible
	// link counts are compared instead.
	cmp.NoNlink = true
	got, err := fsops.SnapshotUpper(e.layers.Upper)
	if err != nil {
		e.Errorf("snapshot of the upper dir: %v", err)
		return
	}
	var lowers []fsops.Tree
	for _, l := range e.layers.Lower {
		lt, err := fsops.SnapshotUpper(l)
		if err != nil {
			e.Errorf("snapshot of a lower dir: %v", err)
			return
		}
		lowers = append(lowers, lt)
	}
	fsops.IgnoreOpaqueWhereNothingBelow(got, lowers...)
	for p, ent := range got {
		for k := range ent.Xattrs {
			for _, pre := range e.drv.upperNoise {
				if strings.HasPrefix(k, pre) {
					delete(ent.Xattrs, k)
				}
			}
		}
		if len(ent.Xattrs) == 0 {
			ent.Xattrs = nil
			got[p] = ent
		}
	}
	fsops.IgnoreOpaqueWhereNothingBelow(want, lowers...)
	if diff := cmp.Diff(want, got); diff != nil {
		e.Errorf("upper dir differs (a = want, b = got):\n  %s\ngot:\n%s", strings.Join(diff, "\n  "), got)
	}
}

// expected builds specs into a scratch dir and snapshots it, with the
// comparison to use: mtimes of non-dirs compared except where anyTime.
func expected(t *testing.T, specs []fsops.Spec, upper bool) (fsops.Tree, fsops.Compare) {
	cmp := fsops.Compare{Mtime: true}
	specs = append([]fsops.Spec(nil), specs...)
	for i, s := range specs {
		if s.Mtime == anyTime {
			cmp.IgnoreMtime = append(cmp.IgnoreMtime, s.Path)
			specs[i].Mtime = 0
		}
	}
	d := t.TempDir()
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := fsops.Build(d, specs); err != nil {
		t.Fatalf("building the expected tree: %v", err)
	}
	snap := fsops.Snapshot
	if upper {
		snap = fsops.SnapshotUpper
	}
	tree, err := snap(d)
	if err != nil {
		t.Fatal(err)
	}
	return tree, cmp
}

// finish reports the case's failures: errors for a driver held to the
// standard, a skip (with the reason) for a peer.
func finish(t *testing.T, c suiteCase, d impl, fails []string) {
	if len(fails) == 0 {
		if why, ok := c.deviations[d.name]; ok {
			t.Logf("passes although a deviation is declared (%s)", why)
		}
		record(d.name, c.name, "pass")
		return
	}
	msg := strings.Join(fails, "\n")
	if why, ok := c.deviations[d.name]; ok {
		record(d.name, c.name, "known deviation")
		t.Skipf("known deviation of %s: %s\n%s", d.name, why, msg)
	}
	if d.peer {
		record(d.name, c.name, "FAIL (peer)")
		t.Skipf("%s differs from overlay (peer, reported only):\n%s", d.name, msg)
	}
	record(d.name, c.name, "FAIL")
	t.Error(msg)
}

var (
	summaryMu sync.Mutex
	summary   = map[string]map[string]string{} // driver -> case -> result
)

func record(drv, c, result string) {
	summaryMu.Lock()
	defer summaryMu.Unlock()
	if summary[drv] == nil {
		summary[drv] = map[string]string{}
	}
	summary[drv][c] = result
}

func printSummary() {
	summaryMu.Lock()
	defer summaryMu.Unlock()
	if len(summary) == 0 {
		return
	}
	var drivers []string
	for d := range summary {
		drivers = append(drivers, d)
	}
	sort.Strings(drivers)
	fmt.Println("conformance summary:")
	for _, d := range drivers {
		counts := map[string]int{}
		var notable []string
		for c, r := range summary[d] {
			counts[r]++
			if r != "pass" && r != "n/a" {
				notable = append(notable, fmt.Sprintf("    %s: %s", c, r))
			}
		}
		sort.Strings(notable)
		fmt.Printf("  %-24s pass %d, fail %d, peer-fail %d, known deviation %d, n/a %d\n",
			d, counts["pass"], counts["FAIL"], counts["FAIL (peer)"], counts["known deviation"], counts["n/a"])
		for _, n := range notable {
			fmt.Println(n)
		}
	}
}
