package runtime

import (
	"fmt"

	"github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// loadSeccomp compiles a spec's seccomp section with libseccomp and loads
// it into the calling thread. It does not set no_new_privs: when the
// container wants no_new_privs init sets it itself; otherwise the filter is
// loaded while the thread still has CAP_SYS_ADMIN, before capabilities are
// dropped (runc's "early" seccomp).
//
// Preconditions: the calling goroutine is locked to the OS thread that will
// execve; the filter is not synchronised to other threads (they die at
// execve).
func loadSeccomp(sc *specs.LinuxSeccomp) error {
	if sc == nil {
		return nil
	}
	def, err := seccompAction(sc.DefaultAction, sc.DefaultErrnoRet)
	if err != nil {
		return err
	}
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return fmt.Errorf("seccomp: new filter: %w", err)
	}
	defer f.Release()
	if err := f.SetNoNewPrivsBit(false); err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	for _, a := range sc.Architectures {
		arch, err := libseccomp.GetArchFromString(archName(a))
		if err != nil {
			continue // an architecture this libseccomp does not know
		}
		if err := f.AddArch(arch); err != nil {
			return fmt.Errorf("seccomp: add arch %s: %w", a, err)
		}
	}
	for _, rule := range sc.Syscalls {
		act, err := seccompAction(rule.Action, rule.ErrnoRet)
		if err != nil {
			return err
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
				return fmt.Errorf("seccomp: rule for %s: %w", name, err)
			}
		}
	}
	if err := f.Load(); err != nil {
		return fmt.Errorf("seccomp: load filter: %w", err)
	}
	return nil
}

// addRule adds one syscall's rule. libseccomp ANDs the conditions of a rule
// and rejects two conditions on the same argument; docker's profile uses
// several conditions on one argument to mean OR, so those become one rule
// each, as runc does.
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
