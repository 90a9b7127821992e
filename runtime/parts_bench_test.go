package runtime

import (
	"fmt"
	"os"
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
)

func BenchmarkSealedExe(b *testing.B) {
	for i := 0; i < b.N; i++ {
		f, err := sealedExe()
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func BenchmarkCgroupCreateDestroy(b *testing.B) {
	spec, _ := NewSpec("x", "/", Options{Args: []string{"true"}, Memory: 64 << 20, PidsLimit: 100})
	for i := 0; i < b.N; i++ {
		cg, err := NewCgroup(fmt.Sprintf("bench-%d", i), spec.Linux.Resources)
		if err != nil {
			b.Fatal(err)
		}
		if err := cg.Destroy(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeccompCompile(b *testing.B) {
	spec, _ := NewSpec("x", "/", Options{Args: []string{"true"}})
	for i := 0; i < b.N; i++ {
		if _, err := compileSeccomp(spec.Linux.Seccomp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSeccompCached is a start's seccomp cost once the store has the
// profile's program.
func BenchmarkSeccompCached(b *testing.B) {
	spec, _ := NewSpec("x", "/", Options{Args: []string{"true"}})
	dir := b.TempDir()
	for i := 0; i < b.N; i++ {
		if _, err := seccompFilter(dir, spec.Linux.Seccomp); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewSpec(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if _, err := NewSpec("x", "/", Options{Args: []string{"true"}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInitTrue is a container from spawn to exit of /bin/true, over
// a plain rootfs directory: the runtime's share of `lamina run`, without
// the CLI, the monitor's process or a union mount.
func BenchmarkInitTrue(b *testing.B) {
	rootfs, err := os.MkdirTemp("", "lamina-bench-rootfs-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(rootfs)
	os.Chmod(rootfs, 0o755)
	if err := testutil.MakeBusyboxRootfs(rootfs); err != nil {
		b.Fatal(err)
	}
	spec, err := NewSpec("bench", rootfs, Options{Args: []string{"/bin/true"}, Network: "none"})
	if err != nil {
		b.Fatal(err)
	}
	devnull, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer devnull.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cg, err := NewCgroup(fmt.Sprintf("bench-init-%d", i), spec.Linux.Resources)
		if err != nil {
			b.Fatal(err)
		}
		p, err := StartInit(spec, Stdio{Stdin: devnull, Stdout: devnull, Stderr: devnull}, cg)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Start(); err != nil {
			b.Fatal(err)
		}
		if code, err := p.Wait(); err != nil || code != 0 {
			b.Fatal(code, err)
		}
		if err := cg.Destroy(); err != nil {
			b.Fatal(err)
		}
	}
}
