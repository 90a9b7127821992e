package runtime

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

func TestParseUlimit(t *testing.T) {
	tests := []struct {
		in   string
		want specs.POSIXRlimit
		err  bool
	}{
		{"nofile=100", specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Soft: 100, Hard: 100}, false},
		{"nofile=100:200", specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Soft: 100, Hard: 200}, false},
		{"core=0", specs.POSIXRlimit{Type: "RLIMIT_CORE"}, false},
		{"nofile=200:100", specs.POSIXRlimit{}, true},
		{"bogus=1", specs.POSIXRlimit{}, true},
		{"nofile", specs.POSIXRlimit{}, true},
		{"nofile=x", specs.POSIXRlimit{}, true},
	}
	for _, tc := range tests {
		got, err := ParseUlimit(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("ParseUlimit(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func TestNewSpecRejects(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		o    Options
		err  string
	}{
		{"no command", Options{}, "no command"},
		{"relative workdir", Options{Args: []string{"x"}, Cwd: "tmp"}, "absolute path"},
		{"unknown cap", Options{Args: []string{"x"}, CapAdd: []string{"FLY"}}, "unknown capability"},
		{"bad network", Options{Args: []string{"x"}, Network: "bridge"}, "not supported"},
		{"bind relative", Options{Args: []string{"x"}, Binds: []string{"rel:/x"}}, "absolute host paths"},
		{"bind onto root", Options{Args: []string{"x"}, Binds: []string{dir + ":/"}}, "other than /"},
		{"bind missing source", Options{Args: []string{"x"}, Binds: []string{dir + "/nope:/x"}}, "no such file"},
		{"bind bad mode", Options{Args: []string{"x"}, Binds: []string{dir + ":/x:rx"}}, "invalid mode"},
		{"tmpfs relative", Options{Args: []string{"x"}, Tmpfs: []string{"tmp"}}, "absolute path"},
		{"nproc", Options{Args: []string{"x"}, Ulimits: []specs.POSIXRlimit{{Type: "RLIMIT_NPROC", Soft: 1, Hard: 1}}}, "pids-limit"},
		{"bad seccomp", Options{Args: []string{"x"}, Seccomp: "{"}, "seccomp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSpec("id", dir, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

func TestCapSet(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		has  []string
		not  []string
	}{
		{"default", Options{}, []string{"CAP_CHOWN", "CAP_KILL"}, []string{"CAP_SYS_ADMIN", "CAP_NET_ADMIN"}},
		{"add", Options{CapAdd: []string{"net_admin"}}, []string{"CAP_NET_ADMIN", "CAP_CHOWN"}, nil},
		{"drop", Options{CapDrop: []string{"CHOWN"}}, []string{"CAP_KILL"}, []string{"CAP_CHOWN"}},
		{"drop all add one", Options{CapDrop: []string{"ALL"}, CapAdd: []string{"KILL"}}, []string{"CAP_KILL"}, []string{"CAP_CHOWN"}},
		{"privileged", Options{Privileged: true}, []string{"CAP_SYS_ADMIN", "CAP_CHOWN"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := capSet(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			set := map[string]bool{}
			for _, n := range c.Bounding {
				set[n] = true
			}
			for _, n := range tc.has {
				if !set[n] {
					t.Errorf("missing %s", n)
				}
			}
			for _, n := range tc.not {
				if set[n] {
					t.Errorf("unexpected %s", n)
				}
			}
		})
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"A=1", "B=2"}, []string{"B=3", "C=4"})
	if want := []string{"A=1", "B=3", "C=4"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestGenerateName(t *testing.T) {
	for i := 0; i < 100; i++ {
		n := GenerateName(false)
		if !validName(n) || !strings.Contains(n, "_") || n == "boring_wozniak" {
			t.Fatalf("bad name %q", n)
		}
	}
}

// validName must accept exactly what docker's name pattern does.
func TestValidNameMatchesPattern(t *testing.T) {
	re := regexp.MustCompile(`^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)
	for _, s := range []string{
		"", "/", "a", "/a", "ab", "/ab", "a_b", "a.b-c", "_ab", ".ab", "-ab", "//ab", "a/b", "a b", "9x", "élan", "ab/",
	} {
		if got, want := validName(s), re.MatchString(s); got != want {
			t.Errorf("validName(%q) = %v; the pattern says %v", s, got, want)
		}
	}
}
