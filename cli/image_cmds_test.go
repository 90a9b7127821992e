package cli_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
	"github.com/lamina-project/lamina/layerstore"
	"github.com/opencontainers/go-digest"
)

// run runs the lamina binary against root and returns stdout, stderr and
// the exit code. Shared by every cli_test file (container_test.go uses it).
func run(t *testing.T, root string, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	out, stderr, err := testutil.Lamina(t, root, stdin, args...)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out, stderr, code
}

// ok runs lamina and fails the test unless it exits 0.
func ok(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, stderr, code := run(t, root, nil, args...)
	if code != 0 {
		t.Fatalf("lamina %s: exit %d\n%s%s", strings.Join(args, " "), code, out, stderr)
	}
	return out
}

// busyboxTarFile writes a busybox rootfs tar, built in the test.
func busyboxTarFile(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	testutil.BusyboxRootfs(t, dir)
	p := filepath.Join(t.TempDir(), "busybox.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			link, _ = os.Readlink(path)
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = rel
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			src, err := os.Open(path)
			if err != nil {
				return err
			}
			defer src.Close()
			_, err = io.Copy(tw, src)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

var hex12 = regexp.MustCompile(`^[0-9a-f]{12}$`)

func TestImageCommands(t *testing.T) {
	root := t.TempDir()
	bb := busyboxTarFile(t)

	// import: prints the full ID; from a file and from stdin.
	id := strings.TrimSpace(ok(t, root, "import", "-c", `CMD ["/bin/sh"]`, "-c", "ENV PATH=/bin", bb, "busybox"))
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(id) {
		t.Fatalf("import printed %q", id)
	}
	data, _ := os.ReadFile(bb)
	out, stderr, code := run(t, root, data, "import", "-m", "from stdin", "-", "second:v2")
	if code != 0 {
		t.Fatalf("import -: %d %s", code, stderr)
	}
	id2 := strings.TrimSpace(out)

	// images: docker's columns, both tags, newest first.
	out = ok(t, root, "images")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !regexp.MustCompile(`^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE$`).MatchString(lines[0]) || len(lines) != 3 {
		t.Fatalf("images:\n%s", out)
	}
	if f := strings.Fields(lines[1]); f[0] != "second" || f[1] != "v2" || f[2] != id2[7:19] {
		t.Errorf("first row %q; want second v2 %s", lines[1], id2[7:19])
	}
	if !strings.Contains(lines[2], "busybox") || !strings.Contains(lines[2], "latest") || !strings.Contains(lines[2], "MB") {
		t.Errorf("busybox row %q", lines[2])
	}
	for _, l := range strings.Split(strings.TrimSpace(ok(t, root, "images", "-q")), "\n") {
		if !hex12.MatchString(l) {
			t.Errorf("images -q line %q", l)
		}
	}
	if out := ok(t, root, "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", "busybox"); out != "busybox:latest "+id[7:19]+"\n" {
		t.Errorf("images --format REPO = %q", out)
	}
	if out := ok(t, root, "images", "--no-trunc", "--digests"); !strings.Contains(out, id) || !strings.Contains(out, "DIGEST") {
		t.Errorf("images --no-trunc --digests:\n%s", out)
	}
	if out := ok(t, root, "image", "ls", "--format", "json"); !strings.Contains(out, `"Repository":"busybox"`) {
		t.Errorf("image ls --format json:\n%s", out)
	}

	// tag, then rmi by tag only untags.
	ok(t, root, "tag", "busybox", "mine/bb:1.0")
	if out := ok(t, root, "images", "mine/bb"); !strings.Contains(out, "1.0") {
		t.Errorf("tagged image not listed:\n%s", out)
	}
	if out := ok(t, root, "rmi", "mine/bb:1.0"); out != "Untagged: mine/bb:1.0\n" {
		t.Errorf("rmi tag = %q", out)
	}

	// history and inspect.
	out = ok(t, root, "history", "second:v2")
	if !regexp.MustCompile(`^IMAGE\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT\n` + id2[7:19] + `\s+.*ago\s+\S+MB\s+from stdin\n$`).MatchString(out) {
		t.Errorf("history:\n%s", out)
	}
	if out := ok(t, root, "history", "-q", "--no-trunc", "busybox"); out != id+"\n" {
		t.Errorf("history -q --no-trunc = %q", out)
	}
	var docs []struct {
		Id       string
		RepoTags []string
		Config   struct{ Cmd, Env []string }
		RootFS   struct {
			Type   string
			Layers []string
		}
		GraphDriver struct{ Data map[string]string }
		Size        int64
	}
	if err := json.Unmarshal([]byte(ok(t, root, "image", "inspect", "busybox")), &docs); err != nil {
		t.Fatal(err)
	}
	d := docs[0]
	if d.Id != id || len(d.RootFS.Layers) != 1 || d.Config.Cmd[0] != "/bin/sh" || d.Config.Env[0] != "PATH=/bin" || d.Size == 0 {
		t.Errorf("inspect = %+v", d)
	}
	if _, err := os.Stat(filepath.Join(d.GraphDriver.Data["UpperDir"], "bin", "busybox")); err != nil {
		t.Errorf("layer dir from inspect: %v", err)
	}
	if out := ok(t, root, "image", "inspect", "-f", "{{.Id}}", "busybox"); out != id+"\n" {
		t.Errorf("inspect -f = %q", out)
	}

	// df: the shared busybox layer is counted once.
	out = ok(t, root, "system", "df")
	if !regexp.MustCompile(`(?m)^Images\s+2\s+0\s+\S+MB`).MatchString(out) {
		t.Errorf("system df:\n%s", out)
	}
	if out := ok(t, root, "system", "df", "-v"); !strings.Contains(out, "SHARED SIZE") || !strings.Contains(out, "Containers space usage:") {
		t.Errorf("system df -v:\n%s", out)
	}

	// errors: docker-like messages, exit codes.
	if _, stderr, code := run(t, root, nil, "rmi", "nosuch"); code != 1 || stderr != "lamina: No such image: nosuch:latest\n" {
		t.Errorf("rmi nosuch: %d %q", code, stderr)
	}
	if _, stderr, code := run(t, root, nil, "history", "nosuch"); code != 125 || !strings.HasPrefix(stderr, "lamina: No such image") {
		t.Errorf("history nosuch: %d %q", code, stderr)
	}
	if _, stderr, code := run(t, root, []byte("not a tar at all, not at all, not at all"), "import", "-", "bad"); code != 125 || !strings.Contains(stderr, "invalid archive") {
		t.Errorf("bad import: %d %q", code, stderr)
	}
	if _, stderr, code := run(t, root, nil, "tag", "busybox", "BAD:tag"); code != 125 || !strings.Contains(stderr, "must be lowercase") {
		t.Errorf("bad tag: %d %q", code, stderr)
	}

	// rmi by ID with two tags: must be forced; -f untags and deletes.
	ok(t, root, "tag", "busybox", "again")
	if _, stderr, code := run(t, root, nil, "rmi", id[7:19]); code != 1 || !strings.Contains(stderr, "must be forced") {
		t.Errorf("rmi id: %d %q", code, stderr)
	}
	out = ok(t, root, "image", "rm", "-f", id[7:19])
	if out != "Untagged: again:latest\nUntagged: busybox:latest\nDeleted: "+id+"\n" {
		t.Errorf("rmi -f = %q (layer is shared with second:v2, so kept)", out)
	}
	out = ok(t, root, "rmi", "second:v2")
	if n := strings.Count(out, "Deleted: "); n != 2 {
		t.Errorf("last rmi should delete image and layer:\n%s", out)
	}

	// prune and fsck on what is left.
	ok(t, root, "import", bb)
	out = ok(t, root, "images")
	if !strings.Contains(out, "<none>") {
		t.Errorf("dangling image not shown:\n%s", out)
	}
	if out := ok(t, root, "image", "prune", "-f"); !strings.Contains(out, "deleted: sha256:") || !strings.Contains(out, "Total reclaimed space: ") {
		t.Errorf("prune:\n%s", out)
	}
	if out := ok(t, root, "system", "fsck"); !strings.HasSuffix(out, "clean\n") {
		t.Errorf("fsck:\n%s", out)
	}
	for _, d := range []string{"layers", "blobs/sha256"} {
		if ents, _ := os.ReadDir(filepath.Join(root, d)); len(ents) != 0 {
			t.Errorf("%s not empty at the end: %v", d, ents)
		}
	}
}

// TestImagesAllAndHistoryChain builds base → child with the store API (as
// build and commit will), then checks docker's rules in the CLI: images
// hides the untagged parent unless -a, history names each step's image,
// and rmi of the child prunes the untagged parent.
func TestImagesAllAndHistoryChain(t *testing.T) {
	root := t.TempDir()
	bb := busyboxTarFile(t)
	baseID := strings.TrimSpace(ok(t, root, "import", bb))
	s, err := layerstore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	child, err := s.Commit(layerstore.CommitOptions{
		Parent: digest.Digest(baseID), Diff: bytes.NewReader(oneFileTar(t, "app", "hello")),
		CreatedBy: "/bin/sh -c echo hello > /app", Tags: []string{"app:1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if out := ok(t, root, "images", "-q"); out != child.ID.Encoded()[:12]+"\n" {
		t.Errorf("images -q = %q; want only the child", out)
	}
	out := ok(t, root, "images", "-a")
	if !strings.Contains(out, baseID[7:19]) || !strings.Contains(out, "<none>") {
		t.Errorf("images -a misses the intermediate image:\n%s", out)
	}
	out = ok(t, root, "history", "app:1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], child.ID.Encoded()[:12]) || !strings.HasPrefix(lines[2], baseID[7:19]) ||
		!strings.Contains(lines[1], "/bin/sh -c echo hello > /app") || !strings.Contains(lines[1], "5B") {
		t.Errorf("history:\n%s", out)
	}
	out = ok(t, root, "rmi", "app:1")
	if strings.Count(out, "Deleted: ") != 4 {
		t.Errorf("rmi app:1 should delete child, parent and both layers:\n%s", out)
	}
}

func oneFileTar(t *testing.T, name, body string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
	tw.Write([]byte(body))
	tw.Close()
	return buf.Bytes()
}
