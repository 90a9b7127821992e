package layerstore

import (
	"math/rand/v2"
	"regexp"
	"testing"
)

// nameRE is the grammar of docker's reference names as a regular
// expression (distribution/reference's, reduced as validName is): the
// oracle validName is held to.
var nameRE = func() *regexp.Regexp {
	const (
		nameComponent = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
		domainPart    = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
		domain        = domainPart + `(?:\.` + domainPart + `)*(?::[0-9]+)?`
	)
	return regexp.MustCompile(`^(?:` + domain + `/)?` + nameComponent + `(?:/` + nameComponent + `)*$`)
}()

func TestValidNameMatchesRegexp(t *testing.T) {
	names := []string{
		"", "busybox", "library/busybox", "docker.io/library/busybox", "localhost:5000/foo/bar",
		"Localhost/foo", "foo/Bar", "a", "a-b", "a--b", "a__b", "a___b", "a._b", "a.b", "a..b",
		"-a", "a-", "a.", "_a", "a/", "/a", "a//b", "host:/a", "host:x/a", "host:1:2/a",
		"ho-st.example.com:443/a/b-c/d_e", "-host/a", "host-/a", "ho..st/a", "UPPER", "a/B",
		"127.0.0.1:5000/x", "x y", "a:b", "émoji/a",
	}
	r := rand.New(rand.NewPCG(1, 2))
	const alphabet = "ab0-_.:/A"
	for i := 0; i < 200000; i++ {
		b := make([]byte, r.IntN(12))
		for j := range b {
			b[j] = alphabet[r.IntN(len(alphabet))]
		}
		names = append(names, string(b))
	}
	for _, n := range names {
		if got, want := validName(n), nameRE.MatchString(n); got != want {
			t.Fatalf("validName(%q) = %v, the grammar says %v", n, got, want)
		}
	}
}
