package cli_test

import (
	"os/exec"
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
)

// BenchmarkRunTrue measures `lamina run --rm busybox /bin/true`, the
// container start latency docker, podman and crun are compared on
// (shared/research/baseline-bench.md), per storage driver.
func BenchmarkRunTrue(b *testing.B) {
	for _, drv := range []string{"overlay", "laminafs"} {
		b.Run(drv, func(b *testing.B) {
			root := benchStore(b)
			bin := testutil.Binary(b, "lamina")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out, err := exec.Command(bin, "--root", root, "run", "--rm", "--storage-driver", drv, "busybox", "/bin/true").CombinedOutput()
				if err != nil {
					b.Fatalf("run: %v\n%s", err, out)
				}
			}
		})
	}
}

// benchStore is ctrStore for benchmarks.
func benchStore(b *testing.B) string {
	b.Helper()
	testutil.RequirePrivileged(b)
	root := b.TempDir()
	dir := b.TempDir()
	testutil.BusyboxRootfs(b, dir)
	tarPath := dir + ".tar"
	if out, err := exec.Command("sh", "-c", "chmod 755 "+dir+" && tar -C "+dir+" -cf "+tarPath+" .").CombinedOutput(); err != nil {
		b.Fatalf("tar: %v\n%s", err, out)
	}
	if out, err := exec.Command(testutil.Binary(b, "lamina"), "--root", root, "import", tarPath, "busybox:latest").CombinedOutput(); err != nil {
		b.Fatalf("import: %v\n%s", err, out)
	}
	return root
}
