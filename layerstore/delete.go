package layerstore

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// DeleteResponse is one line of rmi's output: an untagged reference or a
// deleted image or layer ID, as docker reports them.
type DeleteResponse struct {
	Untagged string `json:"Untagged,omitempty"`
	Deleted  string `json:"Deleted,omitempty"`
}

// ConflictError is docker's refusal to delete an image.
type ConflictError struct {
	ID     digest.Digest
	Hard   bool // cannot be forced
	Reason string
	used   bool   // a container uses the image
	Ref    string // set when a repository reference could not be removed
}

func (e *ConflictError) Error() string {
	if e.Ref != "" {
		return fmt.Sprintf("conflict: unable to remove repository reference %q (must force) - %s", e.Ref, e.Reason)
	}
	how := "must be forced"
	if e.Hard {
		how = "cannot be forced"
	}
	return fmt.Sprintf("conflict: unable to delete %s (%s) - %s", ShortID(e.ID), how, e.Reason)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// RemoveImage is `rmi`: with a tag reference it untags, and deletes the
// image when that was its last tag; with an ID it deletes the image and its
// tags (refusing, unless force, when it has several, or a container uses
// it). Layers nothing else holds are freed; with prune, parents left
// untagged are deleted too. Docker's rules (daemon/images/image_delete.go).
func (s *Store) RemoveImage(ref string, force, prune bool) ([]DeleteResponse, error) {
	var out []DeleteResponse
	var fr *freed
	err := s.update(func(tx *bolt.Tx) error {
		out, fr = nil, nil
		id, err := resolveID(tx, ref)
		if err != nil {
			return err
		}
		tags := tagIndex(tx)[id]
		tb := tx.Bucket(bucketTags)
		quiet := false
		if r, err := ParseReference(ref); err == nil && contains(tags, r.String()) {
			// Untagging the last reference of an image a container uses
			// would leave it dangling: docker asks for -f first.
			if !force && len(tags) == 1 {
				users, err := s.containerUsers(tx)
				if err != nil {
					return err
				}
				if ctrs := users[id]; len(ctrs) > 0 {
					sort.Strings(ctrs)
					return &ConflictError{ID: id, used: true, Ref: ref,
						Reason: fmt.Sprintf("container %s is using its referenced image %s", ShortContainerID(ctrs[0]), ShortID(id))}
				}
			}
			if err := tb.Delete([]byte(r.String())); err != nil {
				return err
			}
			out = append(out, DeleteResponse{Untagged: r.String()})
			if len(tags) > 1 {
				return nil // other tags keep the image
			}
			quiet = true
		} else if len(tags) == 1 {
			mask := conflictHard
			if !force {
				mask |= conflictStopped
			}
			if c, err := s.conflict(tx, id, mask); err != nil || c != nil {
				if c != nil {
					return c
				}
				return err
			}
			if err := tb.Delete([]byte(tags[0])); err != nil {
				return err
			}
			out = append(out, DeleteResponse{Untagged: tags[0]})
		}
		recs, f, err := s.deleteHelper(tx, id, force, prune, quiet)
		out = append(out, recs...)
		fr = f
		crashPoint("rmi-in-txn")
		return err
	})
	if err != nil {
		return nil, err
	}
	crashPoint("rmi-committed")
	return out, s.removeFreed(fr)
}

const (
	conflictChildren = 1 << iota
	conflictRunning
	conflictReferenced
	conflictStopped
	conflictHard = conflictChildren | conflictRunning
	conflictSoft = conflictReferenced | conflictStopped
)

// conflict reports why id cannot be deleted, checking the kinds in mask.
func (s *Store) conflict(tx *bolt.Tx, id digest.Digest, mask int) (*ConflictError, error) {
	if mask&conflictChildren != 0 {
		kids, err := children(tx, id)
		if err != nil {
			return nil, err
		}
		if len(kids) > 0 {
			return &ConflictError{ID: id, Hard: true, Reason: "image has dependent child images"}, nil
		}
	}
	users, err := s.containerUsers(tx)
	if err != nil {
		return nil, err
	}
	ctrs := users[id]
	sort.Strings(ctrs)
	if mask&conflictRunning != 0 && s.IsRunning != nil {
		for _, c := range ctrs {
			if s.IsRunning(c) {
				return &ConflictError{ID: id, Hard: true, used: true, Reason: "image is being used by running container " + ShortContainerID(c)}, nil
			}
		}
	}
	if mask&conflictReferenced != 0 && len(tagIndex(tx)[id]) > 0 {
		return &ConflictError{ID: id, Reason: "image is referenced in multiple repositories"}, nil
	}
	if mask&conflictStopped != 0 && len(ctrs) > 0 {
		return &ConflictError{ID: id, used: true, Reason: "image is being used by stopped container " + ShortContainerID(ctrs[0])}, nil
	}
	return nil, nil
}

// ShortContainerID is the 12-character form of a container ID.
func ShortContainerID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// deleteHelper deletes image id and its remaining tags, frees its layers,
// then (when prune) its parent if that is now dangling.
//
// Preconditions: in a write txn.
func (s *Store) deleteHelper(tx *bolt.Tx, id digest.Digest, force, prune, quiet bool) ([]DeleteResponse, *freed, error) {
	mask := conflictHard
	if !force {
		mask |= conflictSoft
	}
	c, err := s.conflict(tx, id, mask)
	if err != nil {
		return nil, nil, err
	}
	if c != nil {
		// Quiet (after an untag, or pruning a parent): keep the image
		// silently unless it is dangling and unused, when the user should
		// hear why it stays.
		kids, err := children(tx, id)
		if err != nil {
			return nil, nil, err
		}
		dangling := len(tagIndex(tx)[id]) == 0 && len(kids) == 0
		if quiet && (!dangling || c.used) {
			return nil, nil, nil
		}
		return nil, nil, c
	}
	var out []DeleteResponse
	for _, t := range tagIndex(tx)[id] {
		if err := tx.Bucket(bucketTags).Delete([]byte(t)); err != nil {
			return nil, nil, err
		}
		out = append(out, DeleteResponse{Untagged: t})
	}
	ib := tx.Bucket(bucketImages)
	var rec imageRecord
	if _, err := getJSON(ib, id.String(), &rec); err != nil {
		return nil, nil, err
	}
	if err := ib.Delete([]byte(id)); err != nil {
		return nil, nil, err
	}
	out = append(out, DeleteResponse{Deleted: id.String()})
	f, err := s.freeUnreferenced(tx, rec.Layers, []digest.Digest{rec.ID, rec.Manifest})
	if err != nil {
		return nil, nil, err
	}
	for i := len(f.layers) - 1; i >= 0; i-- {
		out = append(out, DeleteResponse{Deleted: f.layers[i].String()})
	}
	if !prune || rec.Parent == "" || ib.Get([]byte(rec.Parent)) == nil {
		return out, f, nil
	}
	more, g, err := s.deleteHelper(tx, rec.Parent, false, true, true)
	f.add(g)
	return append(out, more...), f, err
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// PruneReport is what image prune removed.
type PruneReport struct {
	Deleted        []DeleteResponse
	SpaceReclaimed int64
}

// PruneImages removes dangling images (no tag, no child), or with all every
// image no container uses, then collects orphans left by crashes.
func (s *Store) PruneImages(all bool) (*PruneReport, error) {
	rep := &PruneReport{}
	var fr *freed
	err := s.update(func(tx *bolt.Tx) error {
		rep.Deleted, rep.SpaceReclaimed, fr = nil, 0, &freed{}
		for {
			var victims []digest.Digest
			tags := tagIndex(tx)
			users, err := s.containerUsers(tx)
			if err != nil {
				return err
			}
			parents := map[digest.Digest]bool{}
			var recs []imageRecord
			err = tx.Bucket(bucketImages).ForEach(func(k, v []byte) error {
				var rec imageRecord
				if err := json.Unmarshal(v, &rec); err != nil {
					return err
				}
				recs = append(recs, rec)
				parents[rec.Parent] = true
				return nil
			})
			if err != nil {
				return err
			}
			for _, rec := range recs {
				if parents[rec.ID] || len(users[rec.ID]) > 0 {
					continue
				}
				if all || len(tags[rec.ID]) == 0 {
					victims = append(victims, rec.ID)
				}
			}
			if len(victims) == 0 {
				return nil
			}
			for _, id := range victims {
				before := sizeOfLayers(tx)
				out, f, err := s.deleteHelper(tx, id, all, false, false)
				if err != nil {
					return err
				}
				rep.Deleted = append(rep.Deleted, out...)
				rep.SpaceReclaimed += before - sizeOfLayers(tx)
				fr.add(f)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if err := s.removeFreed(fr); err != nil {
		return rep, err
	}
	if _, err := s.collectGarbage(); err != nil {
		return rep, err
	}
	return rep, nil
}

func sizeOfLayers(tx *bolt.Tx) int64 {
	var n int64
	tx.Bucket(bucketLayers).ForEach(func(k, v []byte) error {
		var l Layer
		if json.Unmarshal(v, &l) == nil {
			n += l.Size
		}
		return nil
	})
	return n
}

// Deleted lines for prune use docker's lower-case form.
func (d DeleteResponse) String() string {
	if d.Untagged != "" {
		return "Untagged: " + d.Untagged
	}
	return "Deleted: " + strings.TrimSpace(d.Deleted)
}
