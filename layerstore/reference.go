package layerstore

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
)

// Docker's reference grammar (distribution/reference), reduced to what a
// local store needs: [domain[:port]/]path[:tag]. Names are kept in their
// familiar form ("busybox", not "docker.io/library/busybox").
//
// The name pattern is compiled on first use: every lamina process links
// this package, and most (a container's monitor and init) never parse a
// reference; compiling it at package initialisation cost each of them
// about a millisecond of start-up.
var nameRE = sync.OnceValue(func() *regexp.Regexp {
	const (
		nameComponent = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
		domainPart    = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
		domain        = domainPart + `(?:\.` + domainPart + `)*(?::[0-9]+)?`
	)
	return regexp.MustCompile(`^(?:` + domain + `/)?` + nameComponent + `(?:/` + nameComponent + `)*$`)
})

// validTag reports whether s matches docker's tag grammar,
// [\w][\w.-]{0,127}.
func validTag(s string) bool {
	if len(s) == 0 || len(s) > 128 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// isHexID reports whether s is 64 lowercase hex digits: an image ID,
// which docker refuses as a repository name.
func isHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// DefaultTag is the tag a reference without one gets.
const DefaultTag = "latest"

// Reference is a repository name and tag.
type Reference struct {
	Repo string
	Tag  string
}

func (r Reference) String() string { return r.Repo + ":" + r.Tag }

// ParseReference parses "name[:tag]" into its familiar, normalized form,
// defaulting the tag to latest. Digest references (name@sha256:...) are
// refused: lamina has no registry digests to match them against.
func ParseReference(s string) (Reference, error) {
	if strings.Contains(s, "@") {
		return Reference{}, fmt.Errorf("invalid reference format: digest references are not supported: %q", s)
	}
	name, tag := s, DefaultTag
	if i := strings.LastIndex(s, ":"); i >= 0 && !strings.Contains(s[i+1:], "/") {
		name, tag = s[:i], s[i+1:]
	}
	if len(s) > 255 {
		return Reference{}, fmt.Errorf("invalid reference format: repository name must not be more than 255 characters")
	}
	if !nameRE().MatchString(name) {
		if strings.ToLower(name) != name && nameRE().MatchString(strings.ToLower(name)) {
			return Reference{}, fmt.Errorf("invalid reference format: repository name (%s) must be lowercase", name)
		}
		return Reference{}, fmt.Errorf("invalid reference format: %q", s)
	}
	if !validTag(tag) {
		return Reference{}, fmt.Errorf("invalid reference format: invalid tag in %q", s)
	}
	if isHexID(name) {
		return Reference{}, fmt.Errorf("invalid repository name (%s), cannot specify 64-byte hexadecimal strings", name)
	}
	name = strings.TrimPrefix(name, "docker.io/")
	name = strings.TrimPrefix(name, "index.docker.io/")
	name = strings.TrimPrefix(name, "library/")
	return Reference{Repo: name, Tag: tag}, nil
}
