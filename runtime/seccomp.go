package runtime

import (
	"fmt"
	"io"
	"os"
	goruntime "runtime"

	"github.com/lamina-project/lamina/runtime/initproc"
	"github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// compileSeccomp compiles a spec's seccomp section with libseccomp into
// the classic BPF program the kernel runs; nil for no section. The program
// is what libseccomp's own seccomp_load would install: the same generator
// writes it.
func compileSeccomp(sc *specs.LinuxSeccomp) ([]byte, error) {
	return compileSeccompAs(sc, seccompTree)
}

// libseccomp's optimisation levels (SCMP_FLTATR_CTL_OPTIMIZE): its rules
// one after the other, by priority (its default), or a binary tree by
// system call number.
const (
	seccompList = 1
	seccompTree = 2
	// minTreeRules is the fewest rules compiled as a tree.
	minTreeRules = 8
)

// compileSeccompAs is compileSeccomp with libseccomp's optimisation level.
func compileSeccompAs(sc *specs.LinuxSeccomp, level int) ([]byte, error) {
	if sc == nil {
		return nil, nil
	}
	def, err := seccompAction(sc.DefaultAction, sc.DefaultErrnoRet)
	if err != nil {
		return nil, err
	}
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, fmt.Errorf("seccomp: new filter: %w", err)
	}
	defer f.Release()
	withoutX32 := false
	for _, a := range sc.Architectures {
		if a == specs.ArchX32 && !kernelHasX32() {
			// A kernel without the x32 ABI refuses its system calls
			// itself (ENOSYS). Docker's profile lists it, which costs
			// 297 of the program's 1,009 instructions: a third of the
			// load of the filter on every start, to allow calls that
			// cannot be made. Without it in the program, such a call
			// meets the bad-arch action, set to the kernel's ENOSYS.
			withoutX32 = true
			continue
		}
		arch, err := libseccomp.GetArchFromString(archName(a))
		if err != nil {
			continue // an architecture this libseccomp does not know
		}
		if err := f.AddArch(arch); err != nil {
			return nil, fmt.Errorf("seccomp: add arch %s: %w", a, err)
		}
	}
	if withoutX32 {
		if err := f.SetBadArchAction(libseccomp.ActErrno.SetReturnCode(int16(unix.ENOSYS))); err != nil {
			return nil, fmt.Errorf("seccomp: bad-arch action: %w", err)
		}
	}
	rules := 0
	for _, rule := range sc.Syscalls {
		act, err := seccompAction(rule.Action, rule.ErrnoRet)
		if err != nil {
			return nil, err
		}
		if act == def {
			continue // libseccomp refuses rules equal to the default
		}
		for _, name := range rule.Names {
			call, err := libseccomp.GetSyscallFromName(name)
			if err != nil {
				continue // a syscall this architecture does not have
			}
			if err := addRule(f, call, act, rule.Args); err != nil {
				return nil, fmt.Errorf("seccomp: rule for %s: %w", name, err)
			}
			rules++
		}
	}
	// A binary tree by system call number, not libseccomp's default of
	// rules one after the other: the kernel, when it loads a filter,
	// runs it for every system call number to find those it always
	// allows (its action cache), which along docker's profile as a list
	// took 1.2-1.3 ms of every start, 0.3-0.5 ms as a tree; and a call
	// the cache does not settle walks log n comparisons, not n.
	// TestSeccompTreeSameAsList checks the two decide alike. Not for a
	// handful of rules (runc's choice too: libseccomp before 2.5.4 lost
	// the default action of a tree without rules, seccomp/libseccomp#370),
	// and a libseccomp without the attribute keeps the list.
	if level == seccompTree && rules >= minTreeRules {
		_ = f.SetOptimize(seccompTree)
	}
	// libseccomp 2.5 exports only to a file descriptor.
	fd, err := unix.MemfdCreate("lamina-seccomp", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("seccomp: memfd: %w", err)
	}
	out := os.NewFile(uintptr(fd), "lamina-seccomp")
	defer out.Close()
	if err := f.ExportBPF(out); err != nil {
		return nil, fmt.Errorf("seccomp: export filter: %w", err)
	}
	prog, err := io.ReadAll(io.NewSectionReader(out, 0, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("seccomp: export filter: %w", err)
	}
	if err := initproc.CheckFilter(prog); err != nil {
		return nil, err
	}
	return prog, nil
}

func addRule(f *libseccomp.ScmpFilter, call libseccomp.ScmpSyscall, act libseccomp.ScmpAction, args []specs.LinuxSeccompArg) error {
	if len(args) == 0 {
		return f.AddRule(call, act)
	}
	conds := make([]libseccomp.ScmpCondition, 0, len(args))
	seen := map[uint]bool{}
	sameArg := false
	for _, a := range args {
		op, err := seccompOp(a.Op)
		if err != nil {
			return err
		}
		vals := []uint64{a.Value}
		if a.Op == specs.OpMaskedEqual {
			vals = append(vals, a.ValueTwo)
		}
		c, err := libseccomp.MakeCondition(a.Index, op, vals...)
		if err != nil {
			return err
		}
		if seen[a.Index] {
			sameArg = true
		}
		seen[a.Index] = true
		conds = append(conds, c)
	}
	if !sameArg {
		return f.AddRuleConditional(call, act, conds)
	}
	for _, c := range conds {
		if err := f.AddRuleConditional(call, act, []libseccomp.ScmpCondition{c}); err != nil {
			return err
		}
	}
	return nil
}

func archName(a specs.Arch) string {
	m := map[specs.Arch]string{
		specs.ArchX86: "x86", specs.ArchX86_64: "amd64", specs.ArchX32: "x32",
		specs.ArchARM: "arm", specs.ArchAARCH64: "arm64",
	}
	if n, ok := m[a]; ok {
		return n
	}
	return string(a)
}

func seccompAction(a specs.LinuxSeccompAction, errno *uint) (libseccomp.ScmpAction, error) {
	switch a {
	case specs.ActKill, specs.ActKillThread:
		return libseccomp.ActKillThread, nil
	case specs.ActKillProcess:
		return libseccomp.ActKillProcess, nil
	case specs.ActTrap:
		return libseccomp.ActTrap, nil
	case specs.ActAllow:
		return libseccomp.ActAllow, nil
	case specs.ActLog:
		return libseccomp.ActLog, nil
	case specs.ActErrno:
		code := int16(unix.EPERM)
		if errno != nil {
			code = int16(*errno)
		}
		return libseccomp.ActErrno.SetReturnCode(code), nil
	case specs.ActTrace:
		code := int16(unix.EPERM)
		if errno != nil {
			code = int16(*errno)
		}
		return libseccomp.ActTrace.SetReturnCode(code), nil
	}
	return libseccomp.ActInvalid, fmt.Errorf("seccomp: unsupported action %q", a)
}

func seccompOp(op specs.LinuxSeccompOperator) (libseccomp.ScmpCompareOp, error) {
	switch op {
	case specs.OpEqualTo:
		return libseccomp.CompareEqual, nil
	case specs.OpNotEqual:
		return libseccomp.CompareNotEqual, nil
	case specs.OpGreaterThan:
		return libseccomp.CompareGreater, nil
	case specs.OpGreaterEqual:
		return libseccomp.CompareGreaterEqual, nil
	case specs.OpLessThan:
		return libseccomp.CompareLess, nil
	case specs.OpLessEqual:
		return libseccomp.CompareLessOrEqual, nil
	case specs.OpMaskedEqual:
		return libseccomp.CompareMaskedEqual, nil
	}
	return libseccomp.CompareInvalid, fmt.Errorf("seccomp: unsupported operator %q", op)
}

// x32SyscallBit marks a system call of the x32 ABI on x86-64.
const x32SyscallBit = 0x40000000

// kernelHasX32 reports whether this kernel runs x32 system calls: one
// without the ABI (CONFIG_X86_X32_ABI unset, the usual case) answers
// ENOSYS to x32's getpid.
func kernelHasX32() bool {
	if goruntime.GOARCH != "amd64" {
		return false
	}
	_, _, e := unix.RawSyscall(x32SyscallBit|unix.SYS_GETPID, 0, 0, 0)
	return e != unix.ENOSYS
}
