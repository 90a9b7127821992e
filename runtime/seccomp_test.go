package runtime

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
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
	a := seccompKeyOf(sc, "6.18", "1:2:3:4")
	for _, k := range [][2]string{{"6.18", "1:2:3:5"}, {"6.19", "1:2:3:4"}} {
		if b := seccompKeyOf(sc, k[0], k[1]); a == b {
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

// Every change to a profile changes its cache key; an equal profile has
// the same key.
func TestHashProfile(t *testing.T) {
	one, two := uint(1), uint(2)
	base := func() *specs.LinuxSeccomp {
		return &specs.LinuxSeccomp{
			DefaultAction: specs.ActErrno, DefaultErrnoRet: &one,
			Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86},
			Flags:         []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_LOG"},
			Syscalls: []specs.LinuxSyscall{
				{Names: []string{"ab", "c"}, Action: specs.ActAllow},
				{Names: []string{"clone"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 7, ValueTwo: 0, Op: specs.OpMaskedEqual}}},
			},
		}
	}
	key := func(sc *specs.LinuxSeccomp) string { return seccompKeyOf(sc, "6.18", "1:2:3:4") }
	want := key(base())
	if got := key(base()); got != want {
		t.Fatalf("equal profiles: %s and %s", got, want)
	}
	for name, change := range map[string]func(*specs.LinuxSeccomp){
		"default action":   func(s *specs.LinuxSeccomp) { s.DefaultAction = specs.ActKill },
		"no default errno": func(s *specs.LinuxSeccomp) { s.DefaultErrnoRet = nil },
		"default errno":    func(s *specs.LinuxSeccomp) { s.DefaultErrnoRet = &two },
		"architectures":    func(s *specs.LinuxSeccomp) { s.Architectures = s.Architectures[:1] },
		"flags":            func(s *specs.LinuxSeccomp) { s.Flags = nil },
		"listener path":    func(s *specs.LinuxSeccomp) { s.ListenerPath = "/run/l" },
		"listener data":    func(s *specs.LinuxSeccomp) { s.ListenerMetadata = "m" },
		"names split":      func(s *specs.LinuxSeccomp) { s.Syscalls[0].Names = []string{"a", "bc"} },
		"names joined":     func(s *specs.LinuxSeccomp) { s.Syscalls[0].Names = []string{"abc"} },
		"action":           func(s *specs.LinuxSeccomp) { s.Syscalls[0].Action = specs.ActLog },
		"errno":            func(s *specs.LinuxSeccomp) { s.Syscalls[0].ErrnoRet = &one },
		"arg index":        func(s *specs.LinuxSeccomp) { s.Syscalls[1].Args[0].Index = 1 },
		"arg value":        func(s *specs.LinuxSeccomp) { s.Syscalls[1].Args[0].Value = 8 },
		"arg value two":    func(s *specs.LinuxSeccomp) { s.Syscalls[1].Args[0].ValueTwo = 7 },
		"arg op":           func(s *specs.LinuxSeccomp) { s.Syscalls[1].Args[0].Op = specs.OpEqualTo },
		"no args":          func(s *specs.LinuxSeccomp) { s.Syscalls[1].Args = nil },
		"rule moved":       func(s *specs.LinuxSeccomp) { s.Syscalls[0], s.Syscalls[1] = s.Syscalls[1], s.Syscalls[0] },
		"rule dropped":     func(s *specs.LinuxSeccomp) { s.Syscalls = s.Syscalls[:1] },
	} {
		sc := base()
		change(sc)
		if key(sc) == want {
			t.Errorf("%s: the key did not change", name)
		}
	}
}

// TestHashProfileFields fails when the spec's seccomp types have fields
// hashProfile does not know: a profile differing only there would share a
// cached program with another.
func TestHashProfileFields(t *testing.T) {
	for typ, known := range map[reflect.Type][]string{
		reflect.TypeOf(specs.LinuxSeccomp{}):    {"DefaultAction", "DefaultErrnoRet", "Architectures", "Flags", "ListenerPath", "ListenerMetadata", "Syscalls"},
		reflect.TypeOf(specs.LinuxSyscall{}):    {"Names", "Action", "ErrnoRet", "Args"},
		reflect.TypeOf(specs.LinuxSeccompArg{}): {"Index", "Value", "ValueTwo", "Op"},
	} {
		var fields []string
		for i := 0; i < typ.NumField(); i++ {
			fields = append(fields, typ.Field(i).Name)
		}
		if !reflect.DeepEqual(fields, known) {
			t.Errorf("%s has fields %q; hashProfile writes %q", typ, fields, known)
		}
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
