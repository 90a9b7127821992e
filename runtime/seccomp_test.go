package runtime

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	goruntime "runtime"
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
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

// TestSeccompTreeSameAsList: the program compileSeccomp writes (a binary
// tree) decides every system call as libseccomp's default layout (a list)
// does, for docker's profile, the profile with capabilities added (rules
// on arguments) and a profile with every kind of argument test: both are
// run in a classic BPF machine for every system call number of each
// architecture, with arguments that the profiles' rules tell apart.
func TestSeccompTreeSameAsList(t *testing.T) {
	profiles := map[string]Options{
		"docker's default":   {Args: []string{"true"}},
		"capabilities added": {Args: []string{"true"}, CapAdd: []string{"SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE", "NET_ADMIN"}},
		"no rules":           {Args: []string{"true"}, Seccomp: `{"defaultAction":"SCMP_ACT_ALLOW"}`},
		"two rules":          {Args: []string{"true"}, Seccomp: `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mount","umount2"],"action":"SCMP_ACT_ERRNO"}]}`},
		"argument tests": {Args: []string{"true"}, Seccomp: `{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],"syscalls":[
			{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"},
			{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
			{"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
			{"names":["socket"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"args":[{"index":0,"value":16,"op":"SCMP_CMP_NE"}]},
			{"names":["mmap"],"action":"SCMP_ACT_LOG","args":[{"index":2,"value":4,"op":"SCMP_CMP_GE"},{"index":1,"value":4096,"op":"SCMP_CMP_LT"}]},
			{"names":["kill"],"action":"SCMP_ACT_KILL","args":[{"index":1,"value":9,"op":"SCMP_CMP_GT"}]},
			{"names":["tkill"],"action":"SCMP_ACT_TRAP","args":[{"index":1,"value":9,"op":"SCMP_CMP_LE"}]}]}`},
	}
	// Arguments: none, the flags and families docker's rules test, and
	// values on both sides of each comparison above, in both halves.
	argSets := [][6]uint64{
		{}, {1}, {0x10000000}, {0x7E020000}, {0x40000000}, {8}, {0xffffffff}, {16}, {2},
		{0, 4095, 4}, {0, 4096, 3}, {0, 9}, {0, 10}, {1 << 40}, {0xffffffffffffffff, 0xffffffffffffffff, 0xffffffffffffffff},
	}
	arches := []uint32{0xc000003e /* x86-64 */, 0x40000003 /* i386 */, 0x12345678 /* none of them */}
	for name, o := range profiles {
		spec, err := NewSpec("x", "/", o)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		list, err := compileSeccompAs(spec.Linux.Seccomp, seccompList)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		tree, err := compileSeccompAs(spec.Linux.Seccomp, seccompTree)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		lvm, tvm := cbpfVM(t, list), cbpfVM(t, tree)
		n := 0
		for _, arch := range arches {
			for nr := uint32(0); nr < 600; nr++ {
				for _, nrx := range []uint32{nr, nr | 0x40000000} {
					for _, args := range argSets {
						in := seccompData(nrx, arch, args)
						l, lerr := lvm.Run(in)
						tr, terr := tvm.Run(in)
						if l != tr || lerr != nil || terr != nil {
							t.Fatalf("%s: arch %#x, nr %#x, args %#x: list %#x (%v), tree %#x (%v)", name, arch, nrx, args, l, lerr, tr, terr)
						}
						// The default action stands where no rule does.
						if name == "no rules" && arch == 0xc000003e && nrx == nr && uint32(tr) != 0x7fff0000 {
							t.Fatalf("no rules: nr %#x gets %#x, not SCMP_ACT_ALLOW", nrx, tr)
						}
						n++
					}
				}
			}
		}
		if n == 0 || len(tree) == 0 {
			t.Fatalf("%s: nothing compared", name)
		}
	}
}

// cbpfVM loads a classic BPF program as the kernel takes it (8-byte
// instructions, native endian).
func cbpfVM(t *testing.T, prog []byte) *bpf.VM {
	t.Helper()
	var ins []bpf.Instruction
	for i := 0; i+8 <= len(prog); i += 8 {
		raw := bpf.RawInstruction{
			Op: binary.NativeEndian.Uint16(prog[i:]), Jt: prog[i+2], Jf: prog[i+3],
			K: binary.NativeEndian.Uint32(prog[i+4:]),
		}
		ins = append(ins, raw.Disassemble())
	}
	vm, err := bpf.NewVM(ins)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// seccompData is struct seccomp_data for bpf.VM, which loads words big
// endian as from a packet: each word the kernel's filter loads natively
// is written so that the VM reads the same value.
func seccompData(nr, arch uint32, args [6]uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], nr)
	binary.BigEndian.PutUint32(b[4:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[20+8*i:], uint32(a>>32))
	}
	return b
}
