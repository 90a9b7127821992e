package runtime

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestSeccompFilterCache checks that a cached program is the compiled one,
// and that a torn or foreign cache file is compiled again, not loaded.
func TestSeccompFilterCache(t *testing.T) {
	spec, err := NewSpec("x", "/", Options{Args: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	sc := spec.Linux.Seccomp
	want, err := compileSeccomp(sc)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), ".seccomp")
	key, err := seccompKey(sc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, key)
	check := func(what string) {
		t.Helper()
		got, err := seccompFilter(dir, sc)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: got a %d-byte program, want the compiled %d bytes", what, len(got), len(want))
		}
		if cached, ok := readCachedFilter(path); !ok || !bytes.Equal(cached, want) {
			t.Fatalf("%s: the cache does not hold the compiled program", what)
		}
	}
	check("first start")
	check("cached")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"empty":       nil,
		"torn":        b[:len(b)-5],
		"bit flipped": append(append([]byte(nil), b[:40]...), append([]byte{b[40] ^ 1}, b[41:]...)...),
	} {
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		check(name)
	}
	// Another profile has another key.
	other, err := NewSpec("x", "/", Options{Args: []string{"true"}, Seccomp: `{"defaultAction":"SCMP_ACT_ALLOW"}`})
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := seccompKey(other.Linux.Seccomp); k == key {
		t.Fatal("two profiles share a cache key")
	}
	// Another lamina binary, or another kernel, has another key.
	a, _ := seccompKeyOf(sc, "6.18", "1:2:3:4")
	for _, k := range [][2]string{{"6.18", "1:2:3:5"}, {"6.19", "1:2:3:4"}} {
		if b, _ := seccompKeyOf(sc, k[0], k[1]); a == b {
			t.Fatalf("kernel %s and binary %s share a key with kernel 6.18, binary 1:2:3:4", k[0], k[1])
		}
	}
	// Writes leave no temporary files behind.
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != key {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("cache directory holds %q, want only %s", names, key)
	}
	if none, err := seccompFilter(dir, nil); none != nil || err != nil {
		t.Fatalf("no profile: got %d bytes, %v", len(none), err)
	}
}

// x32Src makes an x32 system call (x32's getpid) and prints its errno.
const x32Src = `package main

import (
	"fmt"
	"syscall"
)

func main() {
	_, _, e := syscall.RawSyscall(0x40000000|syscall.SYS_GETPID, 0, 0, 0)
	fmt.Println(int(e))
}
`

// TestX32WithoutTheABI: on a kernel without the x32 ABI, the default
// profile's program leaves x32 out (a third of its instructions) and an
// x32 system call in the container still gets the kernel's ENOSYS, as
// with docker's full program.
func TestX32WithoutTheABI(t *testing.T) {
	testutil.RequirePrivileged(t)
	if goruntime.GOARCH != "amd64" {
		t.Skip("x32 is an x86-64 ABI")
	}
	spec, err := NewSpec("0123456789abcdef", "/r", Options{Args: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	prog, err := compileSeccomp(spec.Linux.Seccomp)
	if err != nil {
		t.Fatal(err)
	}
	noX32 := *spec.Linux.Seccomp
	noX32.Architectures = []specs.Arch{specs.ArchX86_64, specs.ArchX86}
	want, err := compileSeccomp(&noX32)
	if err != nil {
		t.Fatal(err)
	}
	// The bad-arch action differs by a couple of instructions; the x32
	// section is about 300.
	if !kernelHasX32() && len(prog) > len(want)+8*8 {
		t.Errorf("the default program has %d instructions; without x32 it is %d", len(prog)/8, len(want)/8)
	}
	bin := testutil.StaticBinary(t, "x32probe", x32Src)
	for _, in := range bothInits(t) {
		for _, o := range []Options{{}, {Seccomp: "unconfined"}} {
			o.Args = []string{"/x32probe"}
			o.Binds = []string{bin + ":/x32probe:ro"}
			r := runSpecWith(t, in, sharedRootfs(t), o)
			if wantOut := fmt.Sprintln(int(unix.ENOSYS)); kernelHasX32() {
				if r.code != 0 || r.stdout == wantOut {
					t.Fatalf("%s init, seccomp %q: %+v", in.name, o.Seccomp, r)
				}
			} else if r.code != 0 || r.stdout != wantOut {
				t.Fatalf("%s init, seccomp %q: %+v, want ENOSYS (%d)", in.name, o.Seccomp, r, unix.ENOSYS)
			}
		}
	}
}
