package runtime

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"

	"github.com/lamina-project/lamina/runtime/initproc"
	"github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// Compiling docker's default profile with libseccomp (three architectures)
// costs a fresh process about 15 ms, more than any other step of a
// container's start, and every container with the same profile gets the
// same program. So the program is compiled
// once and kept in the store, at containers/.seccomp/<key>, where key is a
// digest of everything the program depends on: the profile, the
// architecture, libseccomp's version (its generator), the kernel's release
// (libseccomp adapts to the kernel's API level) and the lamina binary
// (its translation of the profile into libseccomp rules), identified by
// the file's device, inode, size and modification time, so that an
// upgraded or rebuilt lamina never loads what an older one compiled.
//
// A cache file is the program's sha256 followed by the program. It is
// written to a temporary name and renamed, without fsync: a crash can at
// worst leave a torn or empty file, which fails the checksum and is
// compiled again. No user data is at stake, only the compile's time. The
// cache is trusted as config.json is: whoever can write into the store can
// as well rewrite a container's profile.

// seccompCacheFormat changes when the file format or the key's inputs do.
const seccompCacheFormat = "lamina-seccomp-bpf-3"

// seccompFilter returns the compiled program for sc, from the cache in dir
// when a previous start compiled the same profile, else compiled now and
// put there. nil for no profile. A cache that cannot be read or written is
// no error: the program is compiled instead.
func seccompFilter(dir string, sc *specs.LinuxSeccomp) ([]byte, error) {
	if sc == nil {
		return nil, nil
	}
	key, err := seccompKey(sc)
	if err != nil {
		return compileSeccomp(sc)
	}
	path := filepath.Join(dir, key)
	if prog, ok := readCachedFilter(path); ok {
		return prog, nil
	}
	prog, err := compileSeccomp(sc)
	if err != nil {
		return nil, err
	}
	writeCachedFilter(dir, path, prog)
	return prog, nil
}

func seccompKey(sc *specs.LinuxSeccomp) (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	var exe unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &exe); err != nil {
		return "", err
	}
	self := fmt.Sprintf("%d:%d:%d:%d", exe.Dev, exe.Ino, exe.Size, exe.Mtim.Nano())
	return seccompKeyOf(sc, unix.ByteSliceToString(u.Release[:]), self), nil
}

// seccompKeyOf is the cache key of sc for a kernel release and a lamina
// binary's identity.
func seccompKeyOf(sc *specs.LinuxSeccomp, kernel, self string) string {
	major, minor, micro := libseccomp.GetLibraryVersion()
	h := sha256.New()
	for _, part := range []string{
		seccompCacheFormat, goruntime.GOARCH, kernel,
		strconv.FormatUint(uint64(major), 10) + "." + strconv.FormatUint(uint64(minor), 10) + "." + strconv.FormatUint(uint64(micro), 10),
		self,
	} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	hashProfile(h, sc)
	return hex.EncodeToString(h.Sum(nil))
}

// hashProfile writes every field of sc into h, each string and list with
// its length before it, so that two profiles write the same bytes only if
// they are equal. It stands for sc's JSON, which a fresh process took 0.3
// ms to encode (most of it building the encoders). TestHashProfileFields
// fails when the spec's types gain a field this does not write.
func hashProfile(h hash.Hash, sc *specs.LinuxSeccomp) {
	var n [8]byte
	num := func(v uint64) {
		binary.LittleEndian.PutUint64(n[:], v)
		h.Write(n[:])
	}
	str := func(s string) {
		num(uint64(len(s)))
		h.Write([]byte(s))
	}
	optNum := func(p *uint) {
		if p == nil {
			num(0)
			return
		}
		num(1)
		num(uint64(*p))
	}
	str(string(sc.DefaultAction))
	optNum(sc.DefaultErrnoRet)
	num(uint64(len(sc.Architectures)))
	for _, a := range sc.Architectures {
		str(string(a))
	}
	num(uint64(len(sc.Flags)))
	for _, f := range sc.Flags {
		str(string(f))
	}
	str(sc.ListenerPath)
	str(sc.ListenerMetadata)
	num(uint64(len(sc.Syscalls)))
	for _, s := range sc.Syscalls {
		num(uint64(len(s.Names)))
		for _, name := range s.Names {
			str(name)
		}
		str(string(s.Action))
		optNum(s.ErrnoRet)
		num(uint64(len(s.Args)))
		for _, a := range s.Args {
			num(uint64(a.Index))
			num(a.Value)
			num(a.ValueTwo)
			str(string(a.Op))
		}
	}
}

func readCachedFilter(path string) ([]byte, bool) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < sha256.Size {
		return nil, false
	}
	sum, prog := b[:sha256.Size], b[sha256.Size:]
	if got := sha256.Sum256(prog); !bytes.Equal(got[:], sum) || initproc.CheckFilter(prog) != nil {
		return nil, false
	}
	return prog, true
}

func writeCachedFilter(dir, path string, prog []byte) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	sum := sha256.Sum256(prog)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return
	}
	_, err = tmp.Write(append(sum[:], prog...))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
}
