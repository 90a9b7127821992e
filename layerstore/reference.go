package layerstore

import (
	"fmt"
	"regexp"
	"strings"
)

// Docker's reference grammar (distribution/reference), reduced to what a
// local store needs: [domain[:port]/]path[:tag]. Names are kept in their
// familiar form ("busybox", not "docker.io/library/busybox").
var (
	nameComponent = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
	domainPart    = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	domain        = domainPart + `(?:\.` + domainPart + `)*(?::[0-9]+)?`
	nameRE        = regexp.MustCompile(`^(?:` + domain + `/)?` + nameComponent + `(?:/` + nameComponent + `)*$`)
	tagRE         = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
	hexRE         = regexp.MustCompile(`^[a-f0-9]{64}$`)
)

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
	if !nameRE.MatchString(name) {
		if strings.ToLower(name) != name && nameRE.MatchString(strings.ToLower(name)) {
			return Reference{}, fmt.Errorf("invalid reference format: repository name (%s) must be lowercase", name)
		}
		return Reference{}, fmt.Errorf("invalid reference format: %q", s)
	}
	if !tagRE.MatchString(tag) {
		return Reference{}, fmt.Errorf("invalid reference format: invalid tag in %q", s)
	}
	if hexRE.MatchString(name) {
		return Reference{}, fmt.Errorf("invalid repository name (%s), cannot specify 64-byte hexadecimal strings", name)
	}
	name = strings.TrimPrefix(name, "docker.io/")
	name = strings.TrimPrefix(name, "index.docker.io/")
	name = strings.TrimPrefix(name, "library/")
	return Reference{Repo: name, Tag: tag}, nil
}
