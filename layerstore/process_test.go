package layerstore

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lamina-project/lamina/internal/testutil"
)

// These tests run the lamina binary: the store's guarantees are about
// separate processes (file locks, crashes), which goroutines cannot show.

func lamina(t *testing.T, root string, stdin []byte, args ...string) (string, string, error) {
	t.Helper()
	return testutil.Lamina(t, root, stdin, args...)
}

func fsckCLI(t *testing.T, root string) string {
	t.Helper()
	out, stderr, err := lamina(t, root, nil, "system", "fsck")
	if err != nil || strings.Contains(out, "problem") {
		t.Fatalf("fsck not clean: %v\n%s%s", err, out, stderr)
	}
	return out
}

// TestParallelImports runs twenty `lamina import` processes at once, of the
// same and of different tars, and checks the store is consistent and each
// layer is stored once.
func TestParallelImports(t *testing.T) {
	root := t.TempDir()
	dir := t.TempDir()
	bb := busyboxTar(t)
	tars := [][]byte{bb, gz(t, bb), makeTar(t, file("b", strings.Repeat("b", 100000))), makeTar(t, file("c", "c"))}
	for i, d := range tars {
		os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), d, 0o600)
	}
	// tar i%4 for process i: busybox plain and gzip share one layer.
	var wg sync.WaitGroup
	errs := make([]error, 20)
	outs := make([]string, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(testutil.Binary(t, "lamina"), "--root", root, "import", filepath.Join(dir, fmt.Sprint(i%4)), fmt.Sprintf("p%d", i))
			out, err := cmd.CombinedOutput()
			errs[i], outs[i] = err, string(out)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("import %d: %v\n%s", i, err, outs[i])
		}
	}
	out := fsckCLI(t, root)
	if strings.Contains(out, "orphan") {
		t.Errorf("orphans after clean parallel imports:\n%s", out)
	}
	layers, _ := os.ReadDir(filepath.Join(root, "layers"))
	if len(layers) != 3 {
		t.Errorf("%d layer dirs; want 3 (busybox once for plain and gzip)", len(layers))
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{}
	for i := range 20 {
		img, err := s.ResolveImage(fmt.Sprintf("p%d", i))
		if err != nil {
			t.Fatalf("p%d: %v", i, err)
		}
		c := string(img.Layers[0].ChainID)
		group := map[int]int{0: 0, 1: 0, 2: 2, 3: 3}[i%4] // plain and gzip busybox: one layer
		if w, ok := want[group]; ok && w != c {
			t.Errorf("p%d: layer %s; want %s", i, c, w)
		}
		want[group] = c
	}
}

// TestCrashDuringImport kills `lamina import` with SIGKILL at random
// moments, then checks fsck calls the store clean, a later import works,
// and repair leaves no orphans.
func TestCrashDuringImport(t *testing.T) {
	root := t.TempDir()
	tarPath := filepath.Join(t.TempDir(), "big.tar")
	var ents []ent
	for i := range 800 {
		ents = append(ents, file(fmt.Sprintf("d%d/f%d", i%20, i), strings.Repeat(fmt.Sprint(i), 5000)))
	}
	os.WriteFile(tarPath, makeTar(t, ents...), 0o600)
	victimTar := filepath.Join(t.TempDir(), "victim.tar")
	os.WriteFile(victimTar, makeTar(t, append(ents, file("victim", "v"))...), 0o600)
	bin := testutil.Binary(t, "lamina")
	// Measure one import to spread kills over its whole life.
	start := time.Now()
	if _, stderr, err := lamina(t, root, nil, "import", tarPath, "first"); err != nil {
		t.Fatalf("import: %v %s", err, stderr)
	}
	full := time.Since(start)
	t.Logf("one import takes %v", full)
	if _, _, err := lamina(t, root, nil, "rmi", "first"); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	n := 10
	if testing.Short() {
		n = 4
	}
	for i := range n {
		args := []string{"--root", root, "import", tarPath, fmt.Sprintf("crash%d", i)}
		delay := time.Duration(rng.Int64N(2 * int64(full)))
		if i%3 == 2 {
			// Kill an rmi (which deletes an image and frees its layer)
			// somewhere in its much shorter life.
			if _, stderr, err := lamina(t, root, nil, "import", victimTar, "victim"); err != nil {
				t.Fatalf("import: %v %s", err, stderr)
			}
			args = []string{"--root", root, "rmi", "-f", "victim"} // frees its own layer
			delay = time.Duration(rng.Int64N(int64(150 * time.Millisecond)))
		}
		cmd := exec.Command(bin, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		t.Logf("after kill %d: %s", i, strings.TrimSpace(fsckCLI(t, root)))
		if _, stderr, err := lamina(t, root, nil, "images"); err != nil {
			t.Fatalf("images after crash %d: %v %s", i, err, stderr)
		}
	}
	if _, stderr, err := lamina(t, root, nil, "import", tarPath, "after"); err != nil {
		t.Fatalf("import after crashes: %v %s", err, stderr)
	}
	if out, stderr, err := lamina(t, root, nil, "system", "fsck", "--repair"); err != nil || strings.Contains(out, "problem") {
		t.Fatalf("repair: %v\n%s%s", err, out, stderr)
	}
	out := fsckCLI(t, root)
	if strings.Contains(out, "orphan") {
		t.Errorf("orphans after repair:\n%s", out)
	}
	if _, stderr, err := lamina(t, root, nil, "image", "inspect", "after"); err != nil {
		t.Fatalf("inspect: %v %s", err, stderr)
	}
}

// TestCrashPoints kills lamina at each named step of import, rmi, garbage
// collection and the staging sweep (LAMINA_TEST_CRASH_AT), then checks that
// fsck finds the store consistent, the surviving image intact, and that
// repair leaves no orphans.
func TestCrashPoints(t *testing.T) {
	tmp := t.TempDir()
	tarA, tarB := filepath.Join(tmp, "a.tar"), filepath.Join(tmp, "b.tar")
	os.WriteFile(tarA, makeTar(t, file("a", "aaa"), dir("d"), file("d/x", "x")), 0o600)
	os.WriteFile(tarB, gz(t, makeTar(t, file("b", "bbb"))), 0o600)
	cases := []struct {
		point string
		setup func(t *testing.T, root string)
		args  []string
	}{
		{"import-staged", nil, []string{"import", tarB, "b"}},
		{"import-in-txn", nil, []string{"import", tarB, "b"}},
		{"import-committed", nil, []string{"import", tarB, "b"}},
		{"rmi-in-txn", importB, []string{"rmi", "b"}},
		{"rmi-committed", importB, []string{"rmi", "b"}},
		{"rmi-trashed", importB, []string{"rmi", "b"}},
		{"rmi-files-removed", importB, []string{"rmi", "b"}},
		{"gc-between", func(t *testing.T, root string) {
			importB(t, root)
			s, _ := Open(root)
			img, _ := s.ResolveImage("b")
			s.AddContainerRef(img.ID, "gone") // no container dir: a stale ref
			s.RemoveImage("b", true, true)
		}, []string{"system", "fsck", "--repair"}},
		{"sweep-lock-removed", func(t *testing.T, root string) {
			os.WriteFile(filepath.Join(root, "tmp", "stage-1.lock"), nil, 0o600)
			os.MkdirAll(filepath.Join(root, "tmp", "stage-1", "layer"), 0o700)
		}, []string{"import", tarB, "b"}},
	}
	for _, c := range cases {
		t.Run(c.point, func(t *testing.T) {
			root := t.TempDir()
			if _, stderr, err := lamina(t, root, nil, "import", tarA, "a"); err != nil {
				t.Fatalf("import a: %v %s", err, stderr)
			}
			if c.setup != nil {
				c.setup(t, root)
			}
			cmd := exec.Command(testutil.Binary(t, "lamina"), append([]string{"--root", root}, c.args...)...)
			cmd.Env = append(os.Environ(), crashEnv+"="+c.point)
			out, err := cmd.CombinedOutput()
			ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if err == nil || !ws.Signaled() {
				t.Fatalf("crash point %s not reached: %v\n%s", c.point, err, out)
			}
			t.Logf("after crash: %s", strings.TrimSpace(fsckCLI(t, root)))
			if _, stderr, err := lamina(t, root, nil, "image", "inspect", "a"); err != nil {
				t.Fatalf("image a hurt by the crash: %v %s", err, stderr)
			}
			if out, stderr, err := lamina(t, root, nil, "system", "fsck", "--repair"); err != nil {
				t.Fatalf("repair: %v\n%s%s", err, out, stderr)
			}
			if out := fsckCLI(t, root); strings.Contains(out, "orphan") {
				t.Errorf("orphans after repair:\n%s", out)
			}
		})
	}
}

func importB(t *testing.T, root string) {
	t.Helper()
	b := filepath.Join(t.TempDir(), "b.tar")
	os.WriteFile(b, makeTar(t, file("b", "bbb"), dir("e"), file("e/y", "y")), 0o600)
	if _, stderr, err := lamina(t, root, nil, "import", b, "b"); err != nil {
		t.Fatalf("import b: %v %s", err, stderr)
	}
}

// TestParallelImportsAndRemovals races imports of a tar against rmi and
// prune of images sharing its layer: garbage collection must never take a
// layer out from under an import that is committing it.
func TestParallelImportsAndRemovals(t *testing.T) {
	root := t.TempDir()
	tarPath := filepath.Join(t.TempDir(), "l.tar")
	var ents []ent
	for i := range 200 {
		ents = append(ents, file(fmt.Sprintf("d/f%d", i), strings.Repeat("x", i*10)))
	}
	os.WriteFile(tarPath, makeTar(t, ents...), 0o600)
	for i := range 4 {
		if _, stderr, err := lamina(t, root, nil, "import", tarPath, fmt.Sprintf("old%d", i)); err != nil {
			t.Fatalf("import: %v %s", err, stderr)
		}
	}
	var jobs [][]string
	for i := range 8 {
		jobs = append(jobs, []string{"import", tarPath, fmt.Sprintf("new%d", i)})
	}
	for i := range 4 {
		jobs = append(jobs, []string{"rmi", fmt.Sprintf("old%d", i)})
	}
	jobs = append(jobs, []string{"image", "prune", "-a", "-f"}, []string{"system", "fsck", "--repair"})
	var wg sync.WaitGroup
	for _, args := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// prune -a may delete images the imports just made, and rmi
			// may find its image pruned: only the store's consistency is
			// checked, not who won.
			lamina(t, root, nil, args...)
		}()
	}
	wg.Wait()
	fsckCLI(t, root)
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := s.Images()
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		for _, d := range img.LowerDirs(s) {
			if _, err := os.Stat(filepath.Join(d, "d", "f199")); err != nil {
				t.Errorf("image %s: layer content missing: %v", ShortID(img.ID), err)
			}
		}
	}
}
