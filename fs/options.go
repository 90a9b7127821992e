package fs

import (
	"fmt"
	"strings"
)

// CommandLine is a parsed fuse-overlayfs style command line:
//
//	laminafs [-f] [-d] [-o OPTS]... [SOURCE] MOUNTPOINT
type CommandLine struct {
	Config     Config
	Mount      MountOptions
	Target     string
	Foreground bool
	Warnings   []string // unknown options, ignored as fuse-overlayfs does
}

// ParseCommandLine parses laminafs's arguments (without the program name).
func ParseCommandLine(args []string) (*CommandLine, error) {
	cl := &CommandLine{}
	var positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-f":
			cl.Foreground = true
		case a == "-d" || a == "--debug":
			cl.Foreground = true
			cl.Mount.Debug = true
		case a == "-o":
			if i+1 >= len(args) {
				return nil, fmt.Errorf("option -o needs a value")
			}
			i++
			if err := cl.parseOptions(args[i]); err != nil {
				return nil, err
			}
		case strings.HasPrefix(a, "-o"):
			if err := cl.parseOptions(a[2:]); err != nil {
				return nil, err
			}
		case a == "--":
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			cl.Warnings = append(cl.Warnings, "unknown argument ignored: "+a)
		default:
			positional = append(positional, a)
		}
	}
	switch len(positional) {
	case 1:
		cl.Target = positional[0]
	case 2: // as mount.fuse calls helpers: SOURCE MOUNTPOINT
		cl.Target = positional[1]
	case 0:
		return nil, fmt.Errorf("no mountpoint given")
	default:
		return nil, fmt.Errorf("too many arguments: %q", positional)
	}
	if len(cl.Config.Lower) == 0 && cl.Config.Upper == "" {
		return nil, fmt.Errorf("no lowerdir specified")
	}
	if cl.Config.Upper != "" && cl.Config.Work == "" {
		return nil, fmt.Errorf("upperdir needs workdir")
	}
	if cl.Config.Work != "" && cl.Config.Upper == "" {
		return nil, fmt.Errorf("workdir needs upperdir")
	}
	return cl, nil
}

func (cl *CommandLine) parseOptions(s string) error {
	for _, opt := range splitEscaped(s, ',') {
		if opt == "" {
			continue
		}
		key, val, hasVal := strings.Cut(opt, "=")
		switch key {
		case "lowerdir":
			if !hasVal || val == "" {
				return fmt.Errorf("option lowerdir: empty value")
			}
			for _, l := range splitEscaped(val, ':') {
				if l == "" {
					return fmt.Errorf("option lowerdir: empty layer in %q", val)
				}
				cl.Config.Lower = append(cl.Config.Lower, unescape(l))
			}
		case "upperdir":
			if val == "" {
				return fmt.Errorf("option upperdir: empty value")
			}
			cl.Config.Upper = unescape(val)
		case "workdir":
			if val == "" {
				return fmt.Errorf("option workdir: empty value")
			}
			cl.Config.Work = unescape(val)
		case "ro":
			cl.Mount.ReadOnly = true
		case "rw":
			cl.Mount.ReadOnly = false
		case "allow_other", "allow_root":
			cl.Mount.AllowOther = true
		case "debug":
			cl.Mount.Debug = true
			cl.Foreground = true
		case "fsname":
			cl.Mount.FsName = val
		case "passthrough":
			cl.Mount.NoPassthrough = val == "0" || val == "off"
		case "default_permissions", "suid", "dev", "exec", "noatime", "relatime", "lazytime", "nodev", "nosuid", "noexec":
			// default_permissions is always on; the rest are the
			// kernel's business or the default already.
		default:
			cl.Warnings = append(cl.Warnings, "unknown argument ignored: "+opt)
		}
	}
	return nil
}

// splitEscaped splits s at sep, except where sep is escaped with a
// backslash (overlay's escape for ':' and ',' in paths).
func splitEscaped(s string, sep byte) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			cur.WriteByte(c)
			cur.WriteByte(s[i+1])
			i++
			continue
		}
		if c == sep {
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
	}
	return append(out, cur.String())
}

// unescape removes the backslash escapes of splitEscaped.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
