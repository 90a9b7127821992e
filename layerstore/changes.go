package layerstore

import (
	"encoding/json"
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ApplyChanges applies Dockerfile instructions to cfg, as `docker import
// --change` and `docker commit --change` do. Unknown or malformed
// instructions are an error, so nothing is imported with a half-applied
// config.
func ApplyChanges(cfg *ocispec.ImageConfig, changes []string) error {
	for _, ch := range changes {
		ch = strings.TrimSpace(ch)
		instr, rest, _ := strings.Cut(ch, " ")
		rest = strings.TrimSpace(rest)
		if err := applyChange(cfg, strings.ToUpper(instr), rest); err != nil {
			return fmt.Errorf("invalid change %q: %w", ch, err)
		}
	}
	return nil
}

func applyChange(cfg *ocispec.ImageConfig, instr, rest string) error {
	if rest == "" {
		return fmt.Errorf("%s requires an argument", instr)
	}
	switch instr {
	case "CMD":
		cfg.Cmd = commandForm(rest)
	case "ENTRYPOINT":
		cfg.Entrypoint = commandForm(rest)
	case "ENV":
		kv, err := keyValues(rest, true)
		if err != nil {
			return err
		}
		for _, p := range kv {
			cfg.Env = setEnv(cfg.Env, p[0], p[1])
		}
	case "LABEL":
		kv, err := keyValues(rest, false)
		if err != nil {
			return err
		}
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		for _, p := range kv {
			cfg.Labels[p[0]] = p[1]
		}
	case "WORKDIR":
		cfg.WorkingDir = rest
	case "USER":
		cfg.User = rest
	case "STOPSIGNAL":
		cfg.StopSignal = rest
	case "EXPOSE":
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = map[string]struct{}{}
		}
		for _, p := range strings.Fields(rest) {
			if !strings.Contains(p, "/") {
				p += "/tcp"
			}
			cfg.ExposedPorts[p] = struct{}{}
		}
	case "VOLUME":
		if cfg.Volumes == nil {
			cfg.Volumes = map[string]struct{}{}
		}
		var vols []string
		if json.Unmarshal([]byte(rest), &vols) != nil {
			vols = strings.Fields(rest)
		}
		for _, v := range vols {
			cfg.Volumes[v] = struct{}{}
		}
	default:
		return fmt.Errorf("%s is not a valid change command", instr)
	}
	return nil
}

// commandForm parses the JSON (exec) form, else wraps in /bin/sh -c.
func commandForm(s string) []string {
	var argv []string
	if strings.HasPrefix(s, "[") && json.Unmarshal([]byte(s), &argv) == nil {
		return argv
	}
	return []string{"/bin/sh", "-c", s}
}

// keyValues parses `k=v k2="v 2"` or, for ENV's legacy form, `k v w`.
func keyValues(s string, legacy bool) ([][2]string, error) {
	words, err := shellWords(s)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(words[0], "=") {
		if legacy && len(words) >= 1 {
			k, v, _ := strings.Cut(s, " ")
			return [][2]string{{k, strings.TrimSpace(v)}}, nil
		}
		return nil, fmt.Errorf("expected key=value, got %q", words[0])
	}
	var out [][2]string
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("expected key=value, got %q", w)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// shellWords splits on blanks, honouring double and single quotes and
// backslash escapes.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in := false
	var quote rune
	esc := false
	for _, c := range s {
		switch {
		case esc:
			cur.WriteRune(c)
			esc = false
		case c == '\\' && quote != '\'':
			esc = true
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteRune(c)
			}
		case c == '"' || c == '\'':
			quote = c
			in = true
		case c == ' ' || c == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(c)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if in {
		words = append(words, cur.String())
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("empty argument")
	}
	return words, nil
}

func setEnv(env []string, k, v string) []string {
	for i, e := range env {
		if strings.HasPrefix(e, k+"=") {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}
