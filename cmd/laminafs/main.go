// Command laminafs is lamina's FUSE union filesystem. It takes
// fuse-overlayfs's command line, so it can stand in for it anywhere
// (podman's mount_program, benchmark scripts):
//
//	laminafs [-f] [-d] -o lowerdir=L1:L2,upperdir=U,workdir=W[,ro][,allow_other] MOUNTPOINT
//
// Like fuse-overlayfs it returns once the mount is ready and keeps serving
// in the background (in the foreground with -f). SIGTERM or SIGINT
// unmounts cleanly; so do fusermount3 -u and umount.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/fs"
	// Its initialisation puts the start-up heap on a huge page.
	_ "github.com/lamina-project/lamina/internal/hugeheap"
)

// readyEnv names the descriptor on which a background child reports
// that its mount is ready ("ok") or why it failed.
const readyEnv = "_LAMINAFS_READY_FD"

func main() {
	os.Exit(run(os.Args[1:]))
}

func fail(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "laminafs: "+format+"\n", args...)
	return 1
}

func run(args []string) int {
	fs.SetServerProcs()
	for _, a := range args {
		switch a {
		case "-h", "--help":
			fmt.Println("usage: laminafs [-f] [-d] -o lowerdir=L1:L2[,upperdir=U,workdir=W][,ro][,allow_other] MOUNTPOINT")
			return 0
		case "-V", "--version":
			fmt.Println("laminafs version 0.1")
			return 0
		}
	}
	cl, err := fs.ParseCommandLine(args)
	if err != nil {
		return fail("%v", err)
	}
	if os.Getenv(readyEnv) == "" { // a background child's parent said it already
		for _, w := range cl.Warnings {
			fmt.Fprintln(os.Stderr, w)
		}
	}
	if os.Geteuid() == 0 {
		cl.Mount.AllowOther = true
	}
	target := cl.Target
	if ok, err := mountinfo.Mounted(target); err == nil && ok {
		return fail("mountpoint %s: already in use by another mount", target)
	} else if err != nil && !os.IsNotExist(err) {
		return fail("mountpoint %s: %v", target, err)
	}
	if !cl.Foreground && os.Getenv(readyEnv) == "" {
		return daemonize()
	}
	cl.Mount.HugeHeapNow = true // a standalone server lives long
	srv, err := fs.Mount(target, cl.Config, cl.Mount)
	if err != nil {
		return report(err)
	}
	report(nil)
	// Hold no directory busy (paths were resolved by the mount).
	_ = os.Chdir("/")
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		<-sigs
		if err := srv.Unmount(); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
		}
	}()
	srv.Wait()
	return 0
}

// report tells a waiting parent how the mount went; in the foreground it
// just prints an error.
func report(mountErr error) int {
	fdStr := os.Getenv(readyEnv)
	msg := "ok"
	if mountErr != nil {
		msg = mountErr.Error()
	}
	if fdStr != "" {
		var fd int
		fmt.Sscanf(fdStr, "%d", &fd)
		f := os.NewFile(uintptr(fd), "ready")
		_, _ = f.WriteString(msg)
		f.Close()
		os.Unsetenv(readyEnv)
		if mountErr == nil {
			// The parent has gone; nothing is left to print to.
			if null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil {
				_ = unix.Dup2(int(null.Fd()), 0)
				_ = unix.Dup2(int(null.Fd()), 1)
				_ = unix.Dup2(int(null.Fd()), 2)
			}
		}
	}
	if mountErr != nil {
		return fail("%v", mountErr)
	}
	return 0
}

// daemonize re-runs laminafs in a new session and waits until the child
// reports the mount ready, as fuse-overlayfs returns only then.
func daemonize() int {
	r, w, err := os.Pipe()
	if err != nil {
		return fail("%v", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fail("%v", err)
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), readyEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fail("start server: %v", err)
	}
	w.Close()
	buf := make([]byte, 4096)
	n, _ := r.Read(buf)
	msg := strings.TrimSpace(string(buf[:n]))
	if msg == "ok" {
		_ = cmd.Process.Release()
		return 0
	}
	_ = cmd.Wait()
	if msg == "" {
		return fail("server exited before the mount was ready")
	}
	// The child has already printed the error.
	return 1
}
