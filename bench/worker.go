package bench

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// The worker is the process that runs a workload on a mount. It is never
// the process serving the mount (a FUSE server that also calls into its own
// mount can deadlock), and it is timed from outside: it starts, writes "r"
// (ready) to stdout, reads one byte from stdin ("go"), runs the operation, and writes one JSON line of
// Result to stdout; the runner's clock runs from the byte sent to the line
// received, so process start-up and exit are not measured.
//
// Worker arguments: OP ROOT [ARG...]; ROOT is the mount.

// Result is what a worker saw, for the correctness checks.
type Result struct {
	Files   int    `json:"files,omitempty"`   // regular files seen, created, copied up, renamed or looked up
	Dirs    int    `json:"dirs,omitempty"`    // directories seen
	Other   int    `json:"other,omitempty"`   // anything else seen (a whiteout shown as a device, ...)
	Entries int    `json:"entries,omitempty"` // directory entries read
	Bytes   int64  `json:"bytes,omitempty"`   // bytes read
	Ops     int    `json:"ops,omitempty"`     // operations done (lookups, reads, ...)
	Matches int    `json:"matches,omitempty"` // grep hits
	Error   string `json:"error,omitempty"`
}

// WorkerMain runs one worker with args (without the program name) and
// returns the process exit code.
func WorkerMain(args []string, stdin io.Reader, stdout io.Writer) int {
	var res Result
	if len(args) < 2 {
		res.Error = "usage: OP ROOT [ARG...]"
	} else {
		var b [1]byte
		if _, err := stdout.Write([]byte{'r'}); err != nil {
			return 2
		}
		if _, err := io.ReadFull(stdin, b[:]); err != nil {
			return 2 // the runner went away
		}
		var err error
		res, err = runOp(args[0], args[1], args[2:])
		if err != nil {
			res.Error = err.Error()
		}
	}
	line, _ := json.Marshal(res)
	fmt.Fprintf(stdout, "%s\n", line)
	if res.Error != "" {
		return 1
	}
	return 0
}

func runOp(op, root string, args []string) (Result, error) {
	num := func(i int) int64 {
		if i >= len(args) {
			return 0
		}
		n, _ := strconv.ParseInt(args[i], 10, 64)
		return n
	}
	arg := func(i int) string {
		if i >= len(args) {
			return ""
		}
		return args[i]
	}
	switch op {
	case "lookup":
		return opLookup(filepath.Join(root, arg(0)), int(num(1)))
	case "warmlayers":
		return opWarmLayers(arg(0), int(num(1)), args[2:])
	case "walk":
		var res Result
		for _, d := range args {
			if err := walk(filepath.Join(root, d), &res); err != nil {
				return res, err
			}
		}
		return res, nil
	case "readdir":
		return opReaddir(filepath.Join(root, arg(0)))
	case "read":
		return opRead(filepath.Join(root, arg(0)))
	case "randread":
		return opRandRead(filepath.Join(root, arg(0)), int(num(1)), uint64(num(2)))
	case "copyup":
		return opCopyUp(filepath.Join(root, arg(0)), int(num(1)))
	case "copyupbig":
		return opCopyUpBig(filepath.Join(root, arg(0)))
	case "createdelete":
		return opCreateDelete(filepath.Join(root, arg(0)), int(num(1)))
	case "rename":
		return opRename(filepath.Join(root, arg(0)), int(num(1)))
	case "untar":
		return opUntar(arg(0), filepath.Join(root, arg(1)))
	case "grep":
		return opGrep(filepath.Join(root, arg(0)), []byte(arg(1)))
	}
	return Result{}, fmt.Errorf("unknown op %q", op)
}

func opLookup(dir string, n int) (Result, error) {
	var res Result
	var st unix.Stat_t
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, fmt.Sprintf("f%05d", i))
		if err := unix.Lstat(p, &st); err != nil {
			return res, fmt.Errorf("lstat %s: %w", p, err)
		}
		res.Ops++
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			res.Files++
		}
	}
	return res, nil
}

// opWarmLayers lstats path and its n files in each layer directly, not
// through the union, so that a timed lookup afterwards measures the union's
// work rather than the disk's seeks.
func opWarmLayers(path string, n int, layers []string) (Result, error) {
	var res Result
	var st unix.Stat_t
	for _, l := range layers {
		dir := filepath.Join(l, path)
		if err := unix.Lstat(dir, &st); err != nil {
			return res, err
		}
		for i := 0; i < n; i++ {
			if unix.Lstat(filepath.Join(dir, fmt.Sprintf("f%05d", i)), &st) == nil {
				res.Files++
			}
		}
	}
	return res, nil
}

// walk reads every directory and lstats every entry, as ls -lR does.
func walk(dir string, res *Result) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("readdir %s: %w", dir, err)
	}
	var st unix.Stat_t
	for _, name := range names {
		res.Entries++
		p := filepath.Join(dir, name)
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("lstat %s: %w", p, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			res.Dirs++
			if err := walk(p, res); err != nil {
				return err
			}
		case unix.S_IFREG:
			res.Files++
		default:
			res.Other++
		}
	}
	return nil
}

// opReaddir reads a directory's names without stat, as ls -f does.
func opReaddir(dir string) (Result, error) {
	f, err := os.Open(dir)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	return Result{Entries: len(names)}, err
}

// opRead reads a block file sequentially, 1 MiB at a time, checking each
// block's index.
func opRead(p string) (Result, error) {
	var res Result
	f, err := os.Open(p)
	if err != nil {
		return res, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := io.ReadFull(f, buf)
		if err := checkBlocks(buf[:n], off); err != nil {
			return res, err
		}
		off += int64(n)
		res.Bytes += int64(n)
		res.Ops++
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return res, nil
		}
		if err != nil {
			return res, err
		}
	}
}

func checkBlocks(b []byte, off int64) error {
	for i := 0; i+8 <= len(b); i += blockSize {
		want := uint64(off+int64(i)) / blockSize
		if got := binary.LittleEndian.Uint64(b[i:]); got != want {
			return fmt.Errorf("offset %d: block %d where %d belongs", off+int64(i), got, want)
		}
	}
	return nil
}

func opRandRead(p string, n int, seed uint64) (Result, error) {
	var res Result
	f, err := os.Open(p)
	if err != nil {
		return res, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return res, err
	}
	blocks := uint64(fi.Size() / blockSize)
	if blocks == 0 {
		return res, errors.New("file smaller than a block")
	}
	rng := newRand(seed)
	buf := make([]byte, blockSize)
	for i := 0; i < n; i++ {
		off := int64(rng.next()%blocks) * blockSize
		m, err := f.ReadAt(buf, off)
		if err != nil {
			return res, fmt.Errorf("pread at %d: %w", off, err)
		}
		if err := checkBlocks(buf[:m], off); err != nil {
			return res, err
		}
		res.Bytes += int64(m)
		res.Ops++
	}
	return res, nil
}

// opCopyUp opens n lower files for writing and writes their first byte
// back: a copy-up each, and no change of content.
func opCopyUp(dir string, n int) (Result, error) {
	var res Result
	for i := 0; i < n; i++ {
		if err := rewriteFirstByte(filepath.Join(dir, fmt.Sprintf("c%05d", i)), os.O_WRONLY, '#'); err != nil {
			return res, err
		}
		res.Files++
	}
	return res, nil
}

// opCopyUpBig writes block 0's first byte (0) back into a block file.
func opCopyUpBig(p string) (Result, error) {
	if err := rewriteFirstByte(p, os.O_RDWR, 0); err != nil {
		return Result{}, err
	}
	return Result{Files: 1, Ops: 1}, nil
}

// rewriteFirstByte opens p with flag and writes b at offset 0: a copy-up
// of a lower file, whose content b leaves as it was.
func rewriteFirstByte(p string, flag int, b byte) error {
	f, err := os.OpenFile(p, flag, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt([]byte{b}, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

func opCreateDelete(dir string, n int) (Result, error) {
	var res Result
	if err := os.Mkdir(dir, 0o755); err != nil {
		return res, err
	}
	data := []byte("lamina bench 16\n")
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("t%05d", i)), data, 0o644); err != nil {
			return res, err
		}
		res.Files++
	}
	for i := 0; i < n; i++ {
		if err := os.Remove(filepath.Join(dir, fmt.Sprintf("t%05d", i))); err != nil {
			return res, err
		}
		res.Ops++
	}
	return res, nil
}

func opRename(dir string, n int) (Result, error) {
	var res Result
	for i := 0; i < n; i++ {
		from := filepath.Join(dir, fmt.Sprintf("m%05d", i))
		if err := os.Rename(from, filepath.Join(dir, fmt.Sprintf("r%05d", i))); err != nil {
			return res, err
		}
		res.Files++
	}
	return res, nil
}

// opUntar runs GNU tar, the real-world client, into a new directory.
func opUntar(tarball, dest string) (Result, error) {
	if err := os.Mkdir(dest, 0o755); err != nil {
		return Result{}, err
	}
	out, err := exec.Command("tar", "-xf", tarball, "-C", dest).CombinedOutput()
	if err != nil {
		return Result{}, fmt.Errorf("tar: %v: %s", err, bytes.TrimSpace(out))
	}
	return Result{Ops: 1}, nil
}

// opGrep reads every regular file under dir looking for needle, as
// grep -rF does.
func opGrep(dir string, needle []byte) (Result, error) {
	var res Result
	data := make([]byte, 0, 1<<20)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		data = data[:0]
		for {
			if len(data) == cap(data) {
				data = append(data, 0)[:len(data)]
			}
			n, err := f.Read(data[len(data):cap(data)])
			data = data[:len(data)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
		}
		if bytes.Contains(data, needle) {
			res.Matches++
		}
		res.Bytes += int64(len(data))
		res.Files++
		return nil
	})
	return res, err
}
