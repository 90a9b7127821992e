package layerstore

import (
	"fmt"
	"io"
	goruntime "runtime"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// CommitOptions describe an image made on top of another (build steps,
// `commit`).
type CommitOptions struct {
	// Parent is the image built on, or "" for FROM scratch. The new image's
	// layers are the parent's plus the diff, and history names the parent.
	Parent digest.Digest
	// Diff is the step's change set as a layer tar (OCI whiteouts, plain
	// or compressed), or nil for a step that changes only the config.
	Diff io.Reader
	// Config is the new image's config (Cmd, Env, ...); RootFS and history
	// are filled in from the parent.
	Config ocispec.ImageConfig
	// CreatedBy and Comment make the history entry ("/bin/sh -c make").
	CreatedBy, Comment string
	Author             string
	Tags               []string
}

// Commit makes an image from a parent image and one step: what a build step
// or `lamina commit` produces. Like ImportTar, malformed diffs are refused
// before anything is visible, and the image appears atomically.
func (s *Store) Commit(opts CommitOptions) (*Image, error) {
	var refs []Reference
	for _, t := range opts.Tags {
		r, err := ParseReference(t)
		if err != nil {
			return nil, err
		}
		refs = append(refs, r)
	}
	now := time.Now().UTC()
	cfg := ocispec.Image{
		Created:  &now,
		Author:   opts.Author,
		Platform: ocispec.Platform{Architecture: goruntime.GOARCH, OS: "linux"},
		Config:   opts.Config,
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	var have []Layer
	if opts.Parent != "" {
		p, err := s.ResolveImage(opts.Parent.String())
		if err != nil {
			return nil, fmt.Errorf("commit: parent: %w", err)
		}
		cfg.Platform = p.Config.Platform
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, p.Config.RootFS.DiffIDs...)
		cfg.History = append(cfg.History, p.Config.History...)
		for _, l := range p.Layers {
			have = append(have, *l)
		}
	}
	st, err := s.newStage()
	if err != nil {
		return nil, err
	}
	defer st.release()
	var staged []*stagedLayer
	if opts.Diff != nil {
		var parentChain digest.Digest
		if len(have) > 0 {
			parentChain = have[len(have)-1].ChainID
		}
		sl, err := s.stageLayer(st, opts.Diff, parentChain, cfg.RootFS.DiffIDs)
		if err != nil {
			return nil, fmt.Errorf("commit: %w", err)
		}
		staged = append(staged, sl)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, sl.layer.DiffID)
	}
	cfg.History = append(cfg.History, ocispec.History{
		Created: &now, CreatedBy: opts.CreatedBy, Comment: opts.Comment, Author: opts.Author, EmptyLayer: opts.Diff == nil,
	})
	return s.commitImage(st, staged, have, &cfg, opts.Parent, refs)
}
