package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/internal/testutil"
)

// TestGate: a monitor run in the CLI's process (PrepareHere) does not
// start the container's command until the gate the CLI gave it
// (Pending.Gate: the container's hold on its image, still being
// recorded) has opened, and fails the start with the gate's error,
// without running the command, when it fails. A monitor process cannot
// take a gate.
func TestGate(t *testing.T) {
	testutil.RequirePrivileged(t)
	rootfs := sharedRootfs(t)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"opens", nil},
		{"fails", errors.New("image is being removed")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shared := t.TempDir()
			s, err := OpenStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			id := NewID()
			dir := filepath.Join(s.dir, id)
			spec, err := NewSpec(id, filepath.Join(dir, "merged"), Options{
				Args: []string{"/bin/touch", "/shared/ran"}, Network: "none",
				Binds: []string{shared + ":/shared"},
			})
			if err != nil {
				t.Fatal(err)
			}
			c := &Container{ID: id, Name: "gated-" + tc.name, Spec: spec, Driver: DriverOverlay,
				Layers: driver.Layers{Lower: []string{rootfs}, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work")}}
			if err := s.Create(c); err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{"upper", "work", "merged"} {
				if err := os.Mkdir(c.File(d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			p, err := s.PrepareHere(false, id, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				select {
				case <-p.Done():
				case <-time.After(30 * time.Second):
					t.Error("the monitor did not end")
				}
				if err := s.Delete(c); err != nil {
					t.Error(err)
				}
			})
			release := make(chan struct{})
			var asked atomic.Bool
			if !p.Gate(func() error { asked.Store(true); <-release; return tc.err }) {
				t.Fatal("a monitor run here refused a gate")
			}
			done := make(chan error, 1)
			go func() {
				_, err := p.Start(c, AttachOptions{})
				done <- err
			}()
			deadline := time.Now().Add(20 * time.Second)
			for !asked.Load() {
				if time.Now().After(deadline) {
					close(release)
					t.Fatalf("the monitor never asked the gate (start: %v)", <-done)
				}
				time.Sleep(5 * time.Millisecond)
			}
			// Asked, the gate holds: the command must not run meanwhile.
			time.Sleep(300 * time.Millisecond)
			ran := func() bool {
				_, err := os.Stat(filepath.Join(shared, "ran"))
				return err == nil
			}
			if ran() {
				close(release)
				t.Fatal("the command ran before the gate opened")
			}
			select {
			case err := <-done:
				close(release)
				t.Fatalf("Start returned before the gate opened: %v", err)
			default:
			}
			close(release)
			err = <-done
			if tc.err != nil {
				if err == nil || !strings.Contains(err.Error(), tc.err.Error()) {
					t.Fatalf("start: %v, want the gate's error %q", err, tc.err)
				}
				<-p.Done()
				if ran() {
					t.Error("the command ran although the gate failed")
				}
				if st, err := s.State(c); err != nil || st.Status != "created" || st.ExitCode != 125 {
					t.Errorf("state %+v (%v), want created with exit code 125", st, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			if !s.WaitStopped(c, 30*time.Second) {
				t.Fatal("the container did not finish")
			}
			if !ran() {
				t.Error("the command did not run once the gate opened")
			}
		})
	}
	t.Run("monitor process", func(t *testing.T) {
		s, err := OpenStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.Prepare(false)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Abort()
		if p.Gate(func() error { return nil }) {
			t.Error("a monitor process took a gate it cannot wait for")
		}
	})
}

// TestHandoff: a container handed to a monitor run here before its record
// is complete (Pending.Handoff) starts only once Recorded says the record
// is; a record that failed, or an Abort, ends the monitor with its
// container's root filesystem unmounted and its command never run.
func TestHandoff(t *testing.T) {
	testutil.RequirePrivileged(t)
	rootfs := sharedRootfs(t)
	mounted := func(t *testing.T, target string) bool {
		t.Helper()
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(string(b), " "+target+" ")
	}
	for _, tc := range []string{"recorded", "record failed", "aborted"} {
		t.Run(tc, func(t *testing.T) {
			shared := t.TempDir()
			s, err := OpenStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			id := NewID()
			dir := filepath.Join(s.dir, id)
			spec, err := NewSpec(id, filepath.Join(dir, "merged"), Options{
				Args: []string{"/bin/touch", "/shared/ran"}, Network: "none",
				Binds: []string{shared + ":/shared"},
			})
			if err != nil {
				t.Fatal(err)
			}
			c := &Container{ID: id, Name: "handed", Spec: spec, Driver: DriverOverlay,
				Layers: driver.Layers{Lower: []string{rootfs}, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work")}}
			p, err := s.PrepareHere(false, id, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			// As createContainer does: the directories first, then the
			// hand-over, then the record.
			err = s.CreateWith(c, func() (func(error), error) {
				for _, d := range []string{"upper", "work", "merged"} {
					if err := os.Mkdir(c.File(d), 0o755); err != nil {
						return nil, err
					}
				}
				if !p.Handoff(c) {
					t.Error("a monitor run here refused the hand-over")
				}
				return nil, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				select {
				case <-p.Done():
				case <-time.After(30 * time.Second):
					t.Error("the monitor did not end")
				}
				_ = s.Delete(c)
			})
			ran := func() bool {
				_, err := os.Stat(filepath.Join(shared, "ran"))
				return err == nil
			}
			// The monitor mounts and bootstraps, and waits.
			deadline := time.Now().Add(20 * time.Second)
			for !mounted(t, c.File("merged")) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
			if ran() {
				t.Fatal("the command ran before the record was said complete")
			}
			switch tc {
			case "recorded":
				p.Recorded(nil)
				if _, err := p.Start(c, AttachOptions{}); err != nil {
					t.Fatalf("start: %v", err)
				}
				if !s.WaitStopped(c, 30*time.Second) {
					t.Fatal("the container did not finish")
				}
				if !ran() {
					t.Error("the command did not run")
				}
				return
			case "record failed":
				p.Recorded(errors.New("disk full"))
				<-p.Done()
			case "aborted":
				p.Abort()
			}
			if ran() {
				t.Error("the command ran")
			}
			if mounted(t, c.File("merged")) {
				t.Error("the root filesystem is still mounted after the monitor ended")
			}
		})
	}
	t.Run("monitor process", func(t *testing.T) {
		s, err := OpenStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.Prepare(false)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Abort()
		if p.Handoff(&Container{ID: NewID()}) {
			t.Error("a monitor process took a hand-over")
		}
	})
}
