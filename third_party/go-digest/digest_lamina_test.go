package digest

import (
	"regexp"
	"strings"
	"testing"
)

// TestValidateMatchesUpstream holds Digest.Validate, whose hex check is
// hand-written here (LAMINA.md), to upstream's regular expressions.
func TestValidateMatchesUpstream(t *testing.T) {
	hexRe := map[Algorithm]*regexp.Regexp{
		SHA256: regexp.MustCompile(`^[a-f0-9]{64}$`),
		SHA384: regexp.MustCompile(`^[a-f0-9]{96}$`),
		SHA512: regexp.MustCompile(`^[a-f0-9]{128}$`),
	}
	anchored := regexp.MustCompile(`^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)
	// upstream is v1.0.0's Digest.Validate with its expressions.
	upstream := func(d Digest) error {
		s := string(d)
		i := strings.Index(s, ":")
		if i <= 0 || i+1 == len(s) {
			return ErrDigestInvalidFormat
		}
		alg, enc := Algorithm(s[:i]), s[i+1:]
		if !alg.Available() {
			if !anchored.MatchString(s) {
				return ErrDigestInvalidFormat
			}
			return ErrDigestUnsupported
		}
		r, ok := hexRe[alg]
		if !ok {
			return ErrDigestUnsupported
		}
		if alg.Size()*2 != len(enc) {
			return ErrDigestInvalidLength
		}
		if r.MatchString(enc) {
			return nil
		}
		return ErrDigestInvalidFormat
	}
	h64 := strings.Repeat("0123456789abcdef", 4)
	cases := []string{
		"sha256:" + h64,
		"sha256:" + strings.ToUpper(h64),
		"sha256:" + h64[:63] + "g",
		"sha256:" + h64[:63] + "/",
		"sha256:" + h64[:63] + ":",
		"sha256:" + h64[:63] + "`",
		"sha256:" + h64[:63],
		"sha256:" + h64 + "0",
		"sha384:" + h64 + h64[:32],
		"sha512:" + h64 + h64,
		"sha512:" + h64 + h64 + h64[:63] + "G",
		"sha512:" + h64 + h64 + h64 + h64[:63] + "G",
		"sha256:",
		":" + h64,
		"sha256",
		"",
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"foo.bar+baz:AbC=_-",
		"foo..bar:abc",
		"Foo:abc",
		"foo:ab c",
		"multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
	}
	for _, c := range cases {
		got, want := Digest(c).Validate(), upstream(Digest(c))
		if got != want {
			t.Errorf("Validate(%q) = %v, upstream %v", c, got, want)
		}
	}
}
