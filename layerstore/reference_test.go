package layerstore

import (
	"regexp"
	"strings"
	"testing"
)

func TestParseReference(t *testing.T) {
	cases := []struct {
		in, want string // want "" means invalid
	}{
		{"busybox", "busybox:latest"},
		{"busybox:1.36", "busybox:1.36"},
		{"docker.io/library/busybox", "busybox:latest"},
		{"docker.io/me/app:v1", "me/app:v1"},
		{"library/alpine:3", "alpine:3"},
		{"localhost:5000/x", "localhost:5000/x:latest"},
		{"reg.example.com:5000/a/b-c_d.e:tag_1.2-x", "reg.example.com:5000/a/b-c_d.e:tag_1.2-x"},
		{"Busybox", ""},
		{"a:b:c", ""},
		{"a@sha256:0000000000000000000000000000000000000000000000000000000000000000", ""},
		{"", ""},
		{"a:", ""},
		{":tag", ""},
		{"a/../b", ""},
		{"-lead", ""},
		{"a:-tag", ""},
		{"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ""},
	}
	for _, c := range cases {
		r, err := ParseReference(c.in)
		if c.want == "" {
			if err == nil {
				t.Errorf("%q: parsed as %s; want an error", c.in, r)
			}
			continue
		}
		if err != nil || r.String() != c.want {
			t.Errorf("%q = %s, %v; want %s", c.in, r, err, c.want)
		}
	}
}

func TestApplyChangesErrors(t *testing.T) {
	for _, bad := range []string{"RUN x", "CMD", "ENV", "LABEL a", `LABEL "unterminated=1`, "FROM scratch", "ENV =x"} {
		var cfg = Image{}.Config.Config
		if err := ApplyChanges(&cfg, []string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The hand-written checks must accept exactly what docker's patterns do.
func TestTagAndHexMatchPatterns(t *testing.T) {
	tagRE := regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
	hexRE := regexp.MustCompile(`^[a-f0-9]{64}$`)
	hex := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, s := range []string{
		"", "a", "_", ".", "-", "a.", "a-b_c.D9", "v1.2.3", ".a", "-a", "a b", "a:b", "é",
		strings.Repeat("a", 128), strings.Repeat("a", 129), hex, strings.ToUpper(hex), hex[:63], hex + "0", hex[:63] + "g",
	} {
		if got, want := validTag(s), tagRE.MatchString(s); got != want {
			t.Errorf("validTag(%q) = %v; the pattern says %v", s, got, want)
		}
		if got, want := isHexID(s), hexRE.MatchString(s); got != want {
			t.Errorf("isHexID(%q) = %v; the pattern says %v", s, got, want)
		}
	}
}
