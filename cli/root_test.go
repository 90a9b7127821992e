package cli_test

import (
	"strings"
	"testing"

	"github.com/lamina-project/lamina/cli"
)

// TestTopLevelFlags checks the answers to bad flags at each level of the
// command tree, and --version.
func TestTopLevelFlags(t *testing.T) {
	root := t.TempDir()
	for _, c := range []struct {
		args        []string
		code        int
		out, stderr string
	}{
		{[]string{"--version"}, 0, "lamina version " + cli.Version + "\n", ""},
		{[]string{"--bogus"}, 125, "", "lamina: unknown flag: --bogus\nSee 'lamina --help'\n"},
		{[]string{"ps", "--bogus"}, 125, "", "lamina: ps: unknown flag: --bogus\nSee 'lamina ps --help'\n"},
		{[]string{"container", "ls", "--bogus"}, 125, "", "lamina: ls: unknown flag: --bogus\nSee 'lamina container ls --help'\n"},
	} {
		out, stderr, code := run(t, root, nil, c.args...)
		if code != c.code || out != c.out || stderr != c.stderr {
			t.Errorf("lamina %s: exit %d, stdout %q, stderr %q; want %d, %q, %q",
				strings.Join(c.args, " "), code, out, stderr, c.code, c.out, c.stderr)
		}
	}
}
