package layerstore

import (
	"fmt"
	"strings"
)

// Docker's reference grammar (distribution/reference), reduced to what a
// local store needs: [domain[:port]/]path[:tag]. Names are kept in their
// familiar form ("busybox", not "docker.io/library/busybox").
//
// validName matches the grammar by hand: the regular expression it was
// (nameRE in the tests, which hold the two to the same answers) took
// 0.3-0.5 ms to compile on the path of every lamina run, which parses the
// image's reference.
//
// The grammar: [domain "/"] component ("/" component)*, where a domain is
// domainPart ("." domainPart)* [":" digits], a domainPart letters, digits
// and inner dashes, and a component [a-z0-9]+ joined by ".", "_", "__" or
// runs of "-". The first segment is a domain only if the rest is not
// empty; a name matches if it splits either way.
func validName(name string) bool {
	segs := strings.Split(name, "/")
	allComponents := func(ss []string) bool {
		for _, s := range ss {
			if !validComponent(s) {
				return false
			}
		}
		return true
	}
	if allComponents(segs) {
		return true
	}
	return len(segs) >= 2 && validDomain(segs[0]) && allComponents(segs[1:])
}

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func isAlnum(c byte) bool { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }

// validComponent: [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
func validComponent(s string) bool {
	i := 0
	for {
		start := i
		for i < len(s) && isLowerAlnum(s[i]) {
			i++
		}
		if i == start {
			return false // an empty run: at the start, or after a separator
		}
		if i == len(s) {
			return true
		}
		switch {
		case s[i] == '.':
			i++
		case s[i] == '_':
			i++
			if i < len(s) && s[i] == '_' {
				i++
			}
		case s[i] == '-':
			for i < len(s) && s[i] == '-' {
				i++
			}
		default:
			return false
		}
	}
}

// validDomain: part ("." part)* (":" [0-9]+)?, part = alnum | alnum [alnum-]* alnum
func validDomain(s string) bool {
	host, port, hasPort := strings.Cut(s, ":")
	if hasPort {
		if port == "" {
			return false
		}
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return false
			}
		}
	}
	for _, part := range strings.Split(host, ".") {
		if part == "" || !isAlnum(part[0]) || !isAlnum(part[len(part)-1]) {
			return false
		}
		for i := 0; i < len(part); i++ {
			if !isAlnum(part[i]) && part[i] != '-' {
				return false
			}
		}
	}
	return true
}

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
	if !validName(name) {
		if strings.ToLower(name) != name && validName(strings.ToLower(name)) {
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
