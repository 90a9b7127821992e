package initproc

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// execUser is who the container's process runs as.
type execUser struct {
	UID, GID int
	Groups   []int // supplementary groups
	Home     string
}

// lookupUser resolves docker's -u USER[:GROUP] (names or numbers) against
// passwd and group files as the image has them. Paths are read after
// pivot_root, so they can only name files inside the container.
func lookupUser(spec, passwdPath, groupPath string) (execUser, error) {
	passwd, _ := readColonFile(passwdPath, 7)
	groups, _ := readColonFile(groupPath, 4)
	return resolveUser(spec, passwd, groups)
}

// UserDB is the container's /etc/passwd and /etc/group, read for init by
// the monitor when it can tell what they are without the union (nil
// content: the file is missing).
type UserDB struct {
	Passwd []byte `json:"passwd,omitempty"`
	Group  []byte `json:"group,omitempty"`
}

// lookupUserIn is lookupUser with the files' content in db.
func lookupUserIn(spec string, db *UserDB) (execUser, error) {
	passwd, _ := parseColonFile(bytes.NewReader(db.Passwd), 7)
	groups, _ := parseColonFile(bytes.NewReader(db.Group), 4)
	return resolveUser(spec, passwd, groups)
}

// resolveUser resolves spec, as lookupUser, against the rows of passwd
// and group files.
func resolveUser(spec string, passwd, groups [][]string) (execUser, error) {
	u := execUser{Home: "/"}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" {
		userPart = "0"
	}

	uidNum, numErr := strconv.Atoi(userPart)
	found := false
	for _, p := range passwd {
		if p[0] == userPart || (numErr == nil && p[2] == userPart) {
			uid, err1 := strconv.Atoi(p[2])
			gid, err2 := strconv.Atoi(p[3])
			if err1 != nil || err2 != nil {
				continue
			}
			u.UID, u.GID, u.Home, found = uid, gid, p[5], true
			userPart = p[0]
			break
		}
	}
	if !found {
		if numErr != nil {
			return u, fmt.Errorf("unable to find user %s: no matching entries in passwd file", userPart)
		}
		if uidNum < 0 {
			return u, fmt.Errorf("invalid user %q", spec)
		}
		u.UID, u.GID = uidNum, 0
	}
	if hasGroup {
		gidNum, err := strconv.Atoi(groupPart)
		gfound := false
		for _, g := range groups {
			if g[0] == groupPart || (err == nil && g[2] == groupPart) {
				if gid, e := strconv.Atoi(g[2]); e == nil {
					u.GID, gfound = gid, true
					break
				}
			}
		}
		if !gfound {
			if err != nil || gidNum < 0 {
				return u, fmt.Errorf("unable to find group %s: no matching entries in group file", groupPart)
			}
			u.GID = gidNum
		}
	} else if found {
		// Supplementary groups come from group membership by name, as
		// runc does, only when no group was given explicitly.
		for _, g := range groups {
			for _, m := range strings.Split(g[3], ",") {
				if m == userPart {
					if gid, e := strconv.Atoi(g[2]); e == nil && gid != u.GID {
						u.Groups = append(u.Groups, gid)
					}
				}
			}
		}
	}
	return u, nil
}

// readColonFile reads a passwd-style file into rows of at least n fields.
func readColonFile(path string, n int) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseColonFile(f, n)
}

// parseColonFile is readColonFile on r.
func parseColonFile(r io.Reader, n int) ([][]string, error) {
	var rows [][]string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		for len(fields) < n {
			fields = append(fields, "")
		}
		rows = append(rows, fields)
	}
	return rows, sc.Err()
}
