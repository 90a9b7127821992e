package layerstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func importT(t *testing.T, s *Store, data []byte, tags ...string) *Image {
	t.Helper()
	img, err := s.ImportTar(bytes.NewReader(data), ImportOptions{Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestResolveImage(t *testing.T) {
	s := openTemp(t)
	a := importT(t, s, makeTar(t, file("a", "1")), "busybox", "docker.io/library/alpine:3", "reg.example:5000/x/y:v1")
	b := importT(t, s, makeTar(t, file("b", "2")))
	cases := []struct {
		ref  string
		want digest.Digest
		err  error
	}{
		{"busybox", a.ID, nil},
		{"busybox:latest", a.ID, nil},
		{"alpine:3", a.ID, nil},
		{"docker.io/library/alpine:3", a.ID, nil},
		{"reg.example:5000/x/y:v1", a.ID, nil},
		{a.ID.String(), a.ID, nil},
		{a.ID.Encoded(), a.ID, nil},
		{a.ID.Encoded()[:12], a.ID, nil},
		{"sha256:" + b.ID.Encoded()[:8], b.ID, nil},
		{"busybox:other", "", ErrNotFound},
		{"nosuch", "", ErrNotFound},
		{"sha256:" + strings.Repeat("0", 64), "", ErrNotFound},
		{"UPPER", "", ErrNotFound},
	}
	for _, c := range cases {
		img, err := s.ResolveImage(c.ref)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: err = %v; want %v", c.ref, err, c.err)
			}
			continue
		}
		if err != nil || img.ID != c.want {
			t.Errorf("%s: got %v, %v; want %s", c.ref, img, err, c.want)
		}
	}
	if _, err := s.ResolveImage("nosuch"); err == nil || err.Error() != "No such image: nosuch:latest" {
		t.Errorf("message = %v", err)
	}
	dirs := a.LowerDirs(s)
	if len(dirs) != 1 || dirs[0] != filepath.Join(s.Root(), "layers", a.Layers[0].ChainID.Encoded(), "diff") {
		t.Errorf("LowerDirs = %v", dirs)
	}
}

func TestAmbiguousPrefix(t *testing.T) {
	s := openTemp(t)
	seen := map[byte]digest.Digest{}
	for i := 0; ; i++ {
		img := importT(t, s, makeTar(t, file("f", strings.Repeat("x", i))))
		c := img.ID.Encoded()[0]
		if _, ok := seen[c]; ok {
			_, err := s.ResolveImage(string(c))
			if !errors.Is(err, ErrAmbiguous) {
				t.Fatalf("prefix %c: err = %v; want ambiguous", c, err)
			}
			return
		}
		seen[c] = img.ID
	}
}

// TestLayersShared checks that ten images on one base store it once, and
// that deleting frees exactly the layers nothing else uses.
func TestLayersShared(t *testing.T) {
	s := openTemp(t)
	base := makeTar(t, file("bin/sh", strings.Repeat("s", 1000)))
	for i := range 10 {
		importT(t, s, base, "img:"+string(rune('a'+i)))
	}
	gzImg := importT(t, s, gz(t, base), "gz") // same content, other compression
	ents, _ := os.ReadDir(filepath.Join(s.Root(), "layers"))
	if len(ents) != 1 {
		t.Fatalf("%d layer dirs; want 1", len(ents))
	}
	if gzImg.Layers[0].Blob != gzImg.Layers[0].DiffID {
		t.Errorf("dedup kept the gzip blob; the first stored (plain) one should win")
	}
	assertFsckClean(t, s)
	for i := range 10 {
		out, err := s.RemoveImage("img:"+string(rune('a'+i)), false, true)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(out); n != 2 {
			t.Errorf("rmi %d: %v; want Untagged + Deleted (layer kept)", i, out)
		}
	}
	if _, err := os.Stat(s.LayerDir(gzImg.Layers[0].ChainID)); err != nil {
		t.Fatalf("shared layer freed while an image still uses it: %v", err)
	}
	out, err := s.RemoveImage("gz", false, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 3 || out[2].Deleted != gzImg.Layers[0].ChainID.String() {
		t.Errorf("last rmi = %v; want the layer deleted", out)
	}
	assertEmptyStore(t, s)
}

func TestRemoveImageRules(t *testing.T) {
	s := openTemp(t)
	img := importT(t, s, makeTar(t, file("a", "1")), "one", "two")
	// By tag with another tag left: untag only.
	out, err := s.RemoveImage("one", false, true)
	if err != nil || len(out) != 1 || out[0].Untagged != "one:latest" {
		t.Fatalf("rmi one = %v, %v", out, err)
	}
	importT(t, s, makeTar(t, file("b", "1")), "three")
	if err := s.Tag("two", "other/repo:x"); err != nil {
		t.Fatal(err)
	}
	// By ID with several tags: must be forced.
	_, err = s.RemoveImage(ShortID(img.ID), false, true)
	var ce *ConflictError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "must be forced") || !strings.Contains(err.Error(), "referenced in multiple repositories") {
		t.Fatalf("rmi by id = %v; want must-be-forced conflict", err)
	}
	// A container holds it: soft conflict, even by tag the image stays.
	os.MkdirAll(filepath.Join(s.Root(), "containers", "c0ffee0000000000"), 0o700)
	if err := s.AddContainerRef(img.ID, "c0ffee0000000000"); err != nil {
		t.Fatal(err)
	}
	used, _ := s.ImagesUsedByContainers()
	if len(used[img.ID]) != 1 {
		t.Errorf("ImagesUsedByContainers = %v", used)
	}
	if err := s.Untag("other/repo:x"); err != nil {
		t.Fatal(err)
	}
	_, err = s.RemoveImage(img.ID.String(), false, true)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "stopped container c0ffee000000") {
		t.Fatalf("rmi used image = %v", err)
	}
	out, err = s.RemoveImage(img.ID.String(), true, true)
	if err != nil || len(out) != 2 || out[0].Untagged != "two:latest" || out[1].Deleted != img.ID.String() {
		t.Fatalf("rmi -f = %v, %v; want untag + delete, layer kept", out, err)
	}
	if _, err := os.Stat(s.LayerDir(img.Layers[0].ChainID)); err != nil {
		t.Fatalf("container's layer removed with its image: %v", err)
	}
	assertFsckClean(t, s)
	if err := s.RemoveContainerRef(img.ID, "c0ffee0000000000"); err != nil {
		t.Fatal(err)
	}
	rep, err := s.PruneImages(false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Deleted) != 0 {
		t.Errorf("prune deleted tagged images: %v", rep.Deleted)
	}
	if _, err := os.Stat(s.LayerDir(img.Layers[0].ChainID)); !os.IsNotExist(err) {
		t.Errorf("layer nothing holds survived prune: %v", err)
	}
	rep, err = s.PruneImages(true)
	if err != nil || len(rep.Deleted) != 3 || rep.SpaceReclaimed != 1 {
		t.Errorf("prune -a = %+v, %v", rep, err)
	}
	assertEmptyStore(t, s)
}

func TestRetagMovesTag(t *testing.T) {
	s := openTemp(t)
	a := importT(t, s, makeTar(t, file("a", "1")), "x")
	b := importT(t, s, makeTar(t, file("b", "1")))
	if err := s.Tag(b.ID.String(), "x"); err != nil {
		t.Fatal(err)
	}
	got, _ := s.ResolveImage("x")
	if got.ID != b.ID {
		t.Fatalf("x -> %s; want %s", got.ID, b.ID)
	}
	old, _ := s.ResolveImage(a.ID.String())
	if len(old.RepoTags) != 0 {
		t.Errorf("old image still tagged %v", old.RepoTags)
	}
	for _, bad := range []string{"Upper:x", "a:b:c", "x:" + strings.Repeat("t", 200), strings.Repeat("a", 64)} {
		if err := s.Tag("x", bad); err == nil {
			t.Errorf("tag %q accepted", bad)
		}
	}
}

func TestImportChangesAndHistory(t *testing.T) {
	s := openTemp(t)
	img, err := s.ImportTar(bytes.NewReader(makeTar(t, file("a", "hello"))), ImportOptions{
		Tags:    []string{"c"},
		Message: "my import",
		Changes: []string{`CMD ["/bin/sh", "-c", "echo hi"]`, "ENTRYPOINT /init", "ENV A=1 B=\"two words\"", "ENV C legacy form",
			"WORKDIR /srv", "USER nobody", "EXPOSE 80 53/udp", `LABEL a=b "c d"=e`, "VOLUME /data", "STOPSIGNAL SIGINT"},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := img.Config.Config
	if strings.Join(c.Cmd, "|") != "/bin/sh|-c|echo hi" || strings.Join(c.Entrypoint, "|") != "/bin/sh|-c|/init" {
		t.Errorf("cmd %q entrypoint %q", c.Cmd, c.Entrypoint)
	}
	if strings.Join(c.Env, ",") != "A=1,B=two words,C=legacy form" || c.WorkingDir != "/srv" || c.User != "nobody" || c.StopSignal != "SIGINT" {
		t.Errorf("config = %+v", c)
	}
	if _, ok := c.ExposedPorts["53/udp"]; !ok || len(c.ExposedPorts) != 2 || c.Labels["c d"] != "e" || len(c.Volumes) != 1 {
		t.Errorf("config = %+v", c)
	}
	h, err := s.History("c")
	if err != nil || len(h) != 1 || h[0].ID != img.ID.String() || h[0].Comment != "my import" || h[0].Size != 5 {
		t.Errorf("history = %+v, %v", h, err)
	}
	if _, err := s.ImportTar(bytes.NewReader(makeTar(t)), ImportOptions{Changes: []string{"RUN rm -rf /"}}); err == nil {
		t.Error("RUN accepted as a change")
	}
}

// TestFsckFindsCorruption corrupts each kind of object and checks fsck
// reports it and --repair leaves a clean store.
func TestFsckFindsCorruption(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(s *Store, img *Image)
	}{
		{"layer blob bytes", func(s *Store, img *Image) { flipByte(t, s.BlobPath(img.Layers[0].Blob)) }},
		{"config blob bytes", func(s *Store, img *Image) { flipByte(t, s.BlobPath(img.ID)) }},
		{"manifest missing", func(s *Store, img *Image) { os.Remove(s.BlobPath(img.Manifest)) }},
		{"layer dir missing", func(s *Store, img *Image) { os.RemoveAll(s.LayerDir(img.Layers[0].ChainID)) }},
		{"gzip blob", func(s *Store, img *Image) { flipByte(t, s.BlobPath(img.Layers[0].Blob)) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := openTemp(t)
			data := makeTar(t, file("a", strings.Repeat("data", 100)))
			if strings.HasPrefix(c.name, "gzip") {
				data = gz(t, data)
			}
			img := importT(t, s, data, "victim")
			importT(t, s, makeTar(t, file("other", "x")), "bystander")
			assertFsckClean(t, s)
			c.break_(s, img)
			rep, err := s.Fsck(false)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Clean() {
				t.Fatal("fsck found nothing wrong")
			}
			rep, err = s.Fsck(true)
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Clean() || len(rep.Orphans) != 0 {
				t.Fatalf("after repair: %v %v", rep.Problems, rep.Orphans)
			}
			if _, err := s.ResolveImage("bystander"); err != nil {
				t.Errorf("repair hurt a healthy image: %v", err)
			}
		})
	}
}

func flipByte(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x55
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestOrphansAreGarbageNotErrors simulates a crash's leftovers: a dead
// staging dir and an unreferenced blob and layer. Fsck calls the store
// clean and lists them; repair removes them.
func TestOrphansAreGarbageNotErrors(t *testing.T) {
	s := openTemp(t)
	importT(t, s, makeTar(t, file("a", "1")), "keep")
	os.MkdirAll(filepath.Join(s.Root(), "tmp", "stage-123"), 0o700)
	os.WriteFile(filepath.Join(s.Root(), "tmp", "someone-elses"), nil, 0o600)
	os.WriteFile(filepath.Join(s.Root(), "tmp", "stage-456.lock"), nil, 0o600)
	os.WriteFile(s.BlobPath(digest.FromString("x")), []byte("x"), 0o600)
	os.MkdirAll(s.LayerDir(digest.FromString("y")), 0o700)
	st, err := s.newStage() // a live import: must survive
	if err != nil {
		t.Fatal(err)
	}
	defer st.release()
	rep, err := s.Fsck(false)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || len(rep.Orphans) != 4 {
		t.Fatalf("fsck: problems %v orphans %v; want clean with 4 orphans", rep.Problems, rep.Orphans)
	}
	if rep, err = s.Fsck(true); err != nil || len(rep.Orphans) != 0 {
		t.Fatalf("repair: %v %v", rep.Orphans, err)
	}
	if _, err := os.Stat(st.dir); err != nil {
		t.Errorf("live stage swept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "tmp", "someone-elses")); err != nil {
		t.Errorf("sweep removed a file it does not own: %v", err)
	}
}

// TestCommitChainAndHistory builds a three-step chain with Commit and
// checks chain IDs, layer parents, docker's history rows (<missing> below
// the local chain, IDs along it) and rmi's parent rules.
func TestCommitChainAndHistory(t *testing.T) {
	s := openTemp(t)
	base := importT(t, s, makeTar(t, file("etc/os", "base")), "base")
	mid, err := s.Commit(CommitOptions{Parent: base.ID, Diff: bytes.NewReader(makeTar(t, file("app", "v1"), whiteoutOf("etc/.wh.os"))), CreatedBy: "/bin/sh -c make"})
	if err != nil {
		t.Fatal(err)
	}
	top, err := s.Commit(CommitOptions{Parent: mid.ID, CreatedBy: `/bin/sh -c #(nop)  CMD ["app"]`, Config: mid.Config.Config, Tags: []string{"app"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Layers) != 2 || top.Layers[1].Parent != base.Layers[0].ChainID ||
		top.Layers[1].ChainID != ChainID([]digest.Digest{base.Layers[0].DiffID, top.Layers[1].DiffID}) {
		t.Fatalf("layers = %+v", top.Layers)
	}
	if d := top.LowerDirs(s); d[0] != s.LayerDir(top.Layers[1].ChainID) || d[1] != s.LayerDir(base.Layers[0].ChainID) {
		t.Errorf("LowerDirs not top first: %v", d)
	}
	h, err := s.History("app")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h[0].ID != top.ID.String() || h[1].ID != mid.ID.String() || h[2].ID != base.ID.String() || h[0].Size != 0 || h[1].Size != 2 {
		t.Errorf("history = %+v", h)
	}
	// The middle image is untagged but has a child: rmi by ID refuses.
	if _, err := s.RemoveImage(mid.ID.String(), true, true); err == nil || !strings.Contains(err.Error(), "cannot be forced") {
		t.Errorf("rmi parent = %v; want cannot-be-forced conflict", err)
	}
	// Removing the tip prunes the untagged parent, not the tagged base.
	out, err := s.RemoveImage("app", false, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Untagged: app:latest", "Deleted: " + top.ID.String(), "Deleted: " + mid.ID.String(), "Deleted: " + top.Layers[1].ChainID.String()}
	var got []string
	for _, o := range out {
		got = append(got, o.String())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rmi app =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	assertFsckClean(t, s)
	if _, err := s.ResolveImage("base"); err != nil {
		t.Error(err)
	}
	// <missing> rows: history of an imported image whose config has steps.
	if _, err := s.Commit(CommitOptions{Parent: digest.Digest("sha256:" + strings.Repeat("1", 64))}); !errors.Is(err, ErrNotFound) {
		t.Errorf("commit on missing parent = %v", err)
	}
}

func TestRmiTagOfParentOnlyUntags(t *testing.T) {
	s := openTemp(t)
	base := importT(t, s, makeTar(t, file("a", "1")), "base")
	if _, err := s.Commit(CommitOptions{Parent: base.ID, Tags: []string{"child"}}); err != nil {
		t.Fatal(err)
	}
	out, err := s.RemoveImage("base", false, true)
	if err != nil || len(out) != 1 || out[0].Untagged != "base:latest" {
		t.Fatalf("rmi base = %v, %v; want only Untagged (it has a child)", out, err)
	}
	if _, err := s.ResolveImage(base.ID.String()); err != nil {
		t.Errorf("parent deleted: %v", err)
	}
	out, err = s.RemoveImage("child", false, true)
	if err != nil || len(out) != 4 {
		t.Errorf("rmi child = %v, %v; want untag, child, parent and layer deleted", out, err)
	}
	assertEmptyStore(t, s)
}

// TestHistoryMissing: steps recorded in the config but not images in this
// store (a loaded or pulled image's lower steps) show as <missing>, and
// empty-layer steps have size 0.
func TestHistoryMissing(t *testing.T) {
	s := openTemp(t)
	st, err := s.newStage()
	if err != nil {
		t.Fatal(err)
	}
	defer st.release()
	sl, err := s.stageLayer(st, bytes.NewReader(makeTar(t, file("a", "12345"))), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ocispec.Image{
		Created: &fixedTime,
		RootFS:  ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{sl.layer.DiffID}},
		History: []ocispec.History{
			{Created: &fixedTime, CreatedBy: "/bin/sh -c #(nop) ADD file:abc in / "},
			{Created: &fixedTime, CreatedBy: `/bin/sh -c #(nop)  CMD ["sh"]`, EmptyLayer: true},
		},
	}
	img, err := s.commitImage(st, []*stagedLayer{sl}, nil, &cfg, "", []Reference{{"pulled", "1"}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.History("pulled:1")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].ID != img.ID.String() || h[0].Size != 0 || h[1].ID != MissingID || h[1].Size != 5 {
		t.Errorf("history = %+v", h)
	}
}

// TestStaleContainerRef: a ref whose container dir is gone (a crash between
// the two steps of container removal) is an orphan; repair drops it and
// frees the layers it held.
func TestStaleContainerRef(t *testing.T) {
	s := openTemp(t)
	img := importT(t, s, makeTar(t, file("a", "1")))
	if err := s.AddContainerRef(img.ID, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveImage(img.ID.String(), true, true); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Fsck(false)
	if err != nil || !rep.Clean() || len(rep.Orphans) != 1 || rep.Orphans[0].Kind != "container-ref" {
		t.Fatalf("fsck = %+v, %v; want one stale container ref", rep, err)
	}
	if rep, err = s.Fsck(true); err != nil || len(rep.Orphans) != 0 {
		t.Fatalf("repair = %+v, %v", rep, err)
	}
	assertEmptyStore(t, s)
}

// TestHolderGone: with HolderGone set, it alone says which holders are
// gone: a live holder with no container dir (a host mount's) keeps its
// layers through garbage collection, a gone one's ref is dropped.
func TestHolderGone(t *testing.T) {
	s := openTemp(t)
	img := importT(t, s, makeTar(t, file("a", "1")))
	live := map[string]bool{"mount:live": true}
	s.HolderGone = func(h string) bool { return !live[h] }
	for _, h := range []string{"mount:live", "mount:dead"} {
		if err := s.AddContainerRef(img.ID, h); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RemoveImage(img.ID.String(), true, true); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Fsck(true)
	if err != nil || len(rep.Repaired) != 1 || !strings.Contains(rep.Repaired[0], "containers/mount:dead") {
		t.Fatalf("repair = %+v, %v; want the dead holder's ref removed, alone", rep, err)
	}
	refs, err := s.ContainerRefs()
	if err != nil || len(refs) != 1 || refs["mount:live"] != img.ID {
		t.Fatalf("refs after repair = %v, %v; want mount:live's", refs, err)
	}
	if _, err := os.Stat(s.LayerDir(img.Layers[0].ChainID)); err != nil {
		t.Errorf("a live holder's layer was removed: %v", err)
	}
	delete(live, "mount:live")
	if _, err := s.Fsck(true); err != nil {
		t.Fatal(err)
	}
	assertEmptyStore(t, s)
}

// TestGoneHolderDoesNotHold: rmi without force refuses an image a live
// holder uses, and not one only gone holders' refs still name (a container
// run with --rm is gone before its ref is dropped).
func TestGoneHolderDoesNotHold(t *testing.T) {
	s := openTemp(t)
	img := importT(t, s, makeTar(t, file("a", "1")))
	live := map[string]bool{"c1": true}
	s.HolderGone = func(h string) bool { return !live[h] }
	if err := s.AddContainerRef(img.ID, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveImage(img.ID.String(), false, true); err == nil {
		t.Fatal("rmi of an image a live container holds succeeded")
	}
	delete(live, "c1")
	if _, err := s.RemoveImage(img.ID.String(), false, true); err != nil {
		t.Fatalf("rmi of an image only a gone container's ref names: %v", err)
	}
	if _, err := s.Fsck(true); err != nil {
		t.Fatal(err)
	}
	assertEmptyStore(t, s)
}
