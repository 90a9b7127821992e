package fuzz

// FuzzOps decodes its input into a sequence of filesystem operations
// (fsops.Gen driven by the input bytes instead of a seeded generator),
// applies it through kernel overlay and through laminafs on identical
// fixtures, and requires the same errno for every operation and the same
// visible tree after each one.
//
//	go test ./fuzz -run '^$' -fuzz FuzzOps -fuzztime 60s
//
// Each input mounts two unions, so expect tens of executions a second.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lamina-project/lamina/internal/fsops"
	"github.com/lamina-project/lamina/internal/testutil"
)

// maxOps bounds one input's sequence, so that an input stays cheap.
const maxOps = 64

func FuzzOps(f *testing.F) {
	// Seed corpus: inputs that reach copy-up, whiteouts, renames of lower
	// directories, hard links and xattrs within a few operations.
	f.Add([]byte{})
	f.Add([]byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"))
	f.Add([]byte("copy-up then rename then unlink"))
	f.Add([]byte{60, 3, 1, 0, 2, 90, 7, 1, 1, 120, 4, 2, 2, 200, 9, 9, 9})
	f.Add([]byte(strings.Repeat("\x50\x21\x07", 20)))
	f.Add([]byte("\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0"))
	// Found by fuzzing: "rename d2/d0/a a" over one name of a lower hard
	// link; the other name (b) must then show one link.
	f.Add([]byte("002"))
	f.Fuzz(func(t *testing.T, data []byte) {
		testutil.RequirePrivileged(t)
		lam := fsops.Laminafs(t)
		ovl := fsops.Overlay()
		lowers := fsops.Standard()
		fa := fsops.NewFixture(t, lowers, nil, false)
		fb := fsops.NewFixture(t, lowers, nil, false)
		ma, unmountA := fsops.MountUntil(t, ovl, fa.Layers)
		mb, unmountB := fsops.MountUntil(t, lam, fb.Layers)
		defer unmountA()
		defer unmountB()

		ta, err := fsops.Snapshot(ma)
		if err != nil {
			t.Fatal(err)
		}
		src := fsops.NewByteSource(data)
		gen := fsops.NewGen(src, ta)
		var history []string
		for i := 0; i < maxOps && !src.Done(); i++ {
			op := gen.Next()
			ea, eb := fsops.Apply(ma, op), fsops.Apply(mb, op)
			history = append(history, fmt.Sprintf("%d: %s -> %s / %s", i, op, fsops.ErrnoName(ea), fsops.ErrnoName(eb)))
			if ea != eb {
				t.Fatalf("op %d: overlay %s, laminafs %s\n  %s", i, fsops.ErrnoName(ea), fsops.ErrnoName(eb), strings.Join(history, "\n  "))
			}
			gen.Observe(op, ea)
			if ta, err = fsops.Snapshot(ma); err != nil {
				t.Fatal(err)
			}
			tb, err := fsops.Snapshot(mb)
			if err != nil {
				t.Fatalf("op %d: laminafs: %v\n  %s", i, err, strings.Join(history, "\n  "))
			}
			if diff := fsops.Diff(ta, tb); diff != nil {
				t.Fatalf("op %d: visible trees differ (a = overlay, b = laminafs):\n  %s\noperations:\n  %s",
					i, strings.Join(diff, "\n  "), strings.Join(history, "\n  "))
			}
			gen.Reset(ta)
		}
	})
}
