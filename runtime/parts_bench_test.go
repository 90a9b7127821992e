package runtime

import (
	"fmt"
	"os"
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
	libseccomp "github.com/seccomp/libseccomp-golang"
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
	sc := spec.Linux.Seccomp
	devnull, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	defer devnull.Close()
	for i := 0; i < b.N; i++ {
		def, _ := seccompAction(sc.DefaultAction, sc.DefaultErrnoRet)
		f, _ := libseccomp.NewFilter(def)
		for _, rule := range sc.Syscalls {
			act, _ := seccompAction(rule.Action, rule.ErrnoRet)
			if act == def {
				continue
			}
			for _, name := range rule.Names {
				call, err := libseccomp.GetSyscallFromName(name)
				if err != nil {
					continue
				}
				_ = addRule(f, call, act, rule.Args)
			}
		}
		if err := f.ExportBPF(devnull); err != nil {
			b.Fatal(err)
		}
		f.Release()
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
