package runtime

import "sync/atomic"

// Ahead is a container init spawned before anything of its container is
// known (SpawnAhead), for the monitor that a detached `lamina run` runs
// in its own process (PrepareHere) to take.
//
// Why so early: a run's monitor used to spawn its init ahead itself, on a
// goroutine that PrepareHere starts once the command line is parsed and
// the store open. On a 2-CPU machine that goroutine queued behind the CLI
// and its helpers for 1-2 ms, and the spawn (a sealed binary, a clone
// into new namespaces, the exec: about 2 ms) then ended after the CLI had
// made the container, holding up the container's start. Started first
// thing in the process, beside the CLI's own start, it is done by then.
type Ahead struct {
	done  chan struct{} // closed once the spawn has ended
	ip    *InitProcess  // once done: nil when the spawn failed
	taken atomic.Bool
}

// SpawnAhead starts spawning a container init in docker's default
// namespaces (spawnInitAhead), on a goroutine. The caller must hand it to
// a monitor (PrepareHere) or Discard it.
func SpawnAhead() *Ahead {
	a := &Ahead{done: make(chan struct{})}
	go func() {
		defer close(a.done)
		a.ip, _ = spawnInitAhead(sealedInit)
	}()
	return a
}

// take waits for the spawn and returns its init, to the first caller
// only (nil for the others, and when the spawn failed).
func (a *Ahead) take() *InitProcess {
	if a == nil || !a.taken.CompareAndSwap(false, true) {
		return nil
	}
	<-a.done
	return a.ip
}

// Discard kills and reaps the init unless a monitor has taken it.
func (a *Ahead) Discard() {
	if ip := a.take(); ip != nil {
		ip.Kill()
		_, _ = ip.Wait()
	}
}
