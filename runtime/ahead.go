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
//
// With the ID the container will have, the init is also put into the
// container's cgroups as soon as it is spawned (earlyCgroup): a join of a
// cgroup v1 waits for an RCU grace period, which a monitor that started
// it once it had taken the init still waited for at the bootstrap.
type Ahead struct {
	done  chan struct{} // closed once the spawn has ended
	ip    *InitProcess  // once done: nil when the spawn failed
	early *earlyCgroup  // once done: nil without an ID
	taken atomic.Bool
}

// SpawnAhead starts spawning a container init in docker's default
// namespaces (spawnInitAhead), on a goroutine, and, when id is not empty,
// making container id's cgroups with the init in them. The caller must
// hand it to a monitor (PrepareHere, with the same id) or Discard it.
func SpawnAhead(id string) *Ahead {
	a := &Ahead{done: make(chan struct{})}
	go func() {
		defer close(a.done)
		var early *earlyCgroup
		if id != "" {
			early = newEarlyCgroup(id)
		}
		a.ip, _ = spawnInitAhead(sealedInit)
		if early != nil {
			pid := 0
			if a.ip != nil {
				pid = a.ip.Pid()
			}
			early.join(pid)
			a.early = early
		}
	}()
	return a
}

// take waits for the spawn and returns its init and early cgroup, to the
// first caller only (nils for the others, and when the spawn failed).
func (a *Ahead) take() (*InitProcess, *earlyCgroup) {
	if a == nil || !a.taken.CompareAndSwap(false, true) {
		return nil, nil
	}
	<-a.done
	return a.ip, a.early
}

// Discard kills and reaps the init, and removes its cgroups, unless a
// monitor has taken them.
func (a *Ahead) Discard() {
	ip, early := a.take()
	if ip != nil {
		ip.Kill()
		_, _ = ip.Wait()
	}
	if early != nil {
		early.drop()
	}
}
