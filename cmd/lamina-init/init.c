// lamina-init is a container's init: lamina's container monitor spawns it
// into the container's new namespaces, where it builds the root filesystem
// from the monitor's bootstrap and execs the container's command.
//
// It is C, as crun and runc's nsexec are, because it starts on the path of
// every `lamina run`: a Go program's runtime start costs this machine
// about 4 ms of CPU, 250 page faults and the scheduler's background
// wake-ups, where this binary takes under 1 ms and 30 faults. It does what
// package runtime/initproc does for an init spawned from the lamina binary
// itself (when lamina-init is not installed), in the same order and with
// the same messages: keep the two in step. The bootstrap is the flat
// encoding of runtime/initproc/flat.go, not the Go init's JSON; what init
// sends back is the same small JSON messages.
//
// Preconditions: fd 3 is the sync socket (blocking, SOCK_SEQPACKET);
// fds 0-2 are the container's stdio, or /dev/null for an init spawned
// ahead, which then gets its stdio with the bootstrap.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

// The flat bootstrap (runtime/initproc/flat.go): a header, then records of
// a u32 tag, a u32 length and that many bytes. Strings end in a NUL.
#define FLAT_MAGIC "LMNI"
#define FLAT_PROTOCOL 3

enum {
	T_FLAGS = 1, T_ROOTFS, T_HOSTNAME, T_MOUNT, T_CGROUP1, T_MASKED, T_READONLY,
	T_RLIMIT, T_ARG, T_ENV, T_CWD, T_USER, T_PASSWD, T_GROUP, T_CAPS, T_FILTER,
	T_AHEAD_PATH,
};

// The look-ahead (EncodeAhead): the bootstrap's layout, a T_ROOTFS and a
// T_AHEAD_PATH per path, sent before the bootstrap.
#define AHEAD_MAGIC "LMNA"

enum {
	F_NEWNS = 1 << 0, F_NEWCGROUP = 1 << 1, F_NETNS = 1 << 2, F_UTSNS = 1 << 3,
	F_TERMINAL = 1 << 4, F_ROOT_RO = 1 << 5, F_NNP = 1 << 6, F_CGROUP2 = 1 << 7,
	F_USERDB = 1 << 8, F_EARLY_PRIVILEGES = 1 << 9,
};

enum { M_FS = 0, M_BIND = 1, M_CGROUP = 2 };

enum { EXIT_SETUP = 125, EXIT_CANNOT_EXECUTE = 126, EXIT_NOT_FOUND = 127 };

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define SYNC_FD 3

struct mnt {
	uint32_t kind;
	unsigned long flags;
	const unsigned char *props; // nprop u64s, unaligned
	uint32_t nprop;
	const char *dest, *src, *type, *data;
};

struct rlim {
	uint32_t res;
	uint64_t soft, hard;
};

// strs is a growing array of strings, NULL-terminated for execve.
struct strs {
	const char **v;
	size_t n, cap;
};

struct boot {
	uint32_t flags;
	const char *rootfs, *hostname, *cwd, *user;
	struct mnt *mounts;
	size_t nmounts, capmounts;
	struct strs cg1, masked, readonly, args, env;
	struct rlim *rlimits;
	size_t nrlimits, caprlimits;
	const char *passwd, *group;
	size_t passwdlen, grouplen;
	uint64_t caps[5]; // bounding, effective, permitted, inheritable, ambient
	const unsigned char *filter;
	size_t filterlen;
};

struct user {
	long uid, gid;
	long *groups;
	size_t ngroups;
	const char *home;
};

static int rootfd = -1;
static int last_cap = -1;

// ---- messages to the monitor ----

// send_json sends a message of init's small JSON kind, with fd when >= 0.
static void send_json(const char *type, const char *error, int code, int fd) {
	size_t cap = 64 + (error ? 6 * strlen(error) : 0);
	char *buf = malloc(cap);
	if (!buf)
		return;
	size_t n = (size_t)snprintf(buf, cap, "{\"type\":\"%s\"", type);
	if (error) {
		n += (size_t)snprintf(buf + n, cap - n, ",\"error\":\"");
		for (const unsigned char *p = (const unsigned char *)error; *p; p++) {
			if (*p == '"' || *p == '\\') {
				buf[n++] = '\\';
				buf[n++] = (char)*p;
			} else if (*p < 0x20) {
				n += (size_t)snprintf(buf + n, cap - n, "\\u%04x", *p);
			} else {
				buf[n++] = (char)*p;
			}
		}
		buf[n++] = '"';
	}
	if (code)
		n += (size_t)snprintf(buf + n, cap - n, ",\"code\":%d", code);
	buf[n++] = '}';
	struct iovec iov = {.iov_base = buf, .iov_len = n};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	char cbuf[CMSG_SPACE(sizeof(int))];
	if (fd >= 0) {
		memset(cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf;
		msg.msg_controllen = sizeof(cbuf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	while (sendmsg(SYNC_FD, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR)
		;
	free(buf);
}

// errstr is strerror as Go spells it: lower case.
static const char *errstr(int e) {
	static char buf[128];
	snprintf(buf, sizeof(buf), "%s", strerror(e));
	if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
		buf[0] = (char)(buf[0] - 'A' + 'a');
	return buf;
}

// fail tells the monitor why init cannot go on and exits with code
// (docker's 125, 126 or 127).
__attribute__((noreturn, format(printf, 2, 3))) static void fail(int code, const char *fmt, ...) {
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	send_json("error", msg, code, -1);
	_exit(code);
}

// quote is s as Go's %q writes it (strconv.Quote), for messages the Go
// init formats with %q: ASCII only; other bytes pass as they are.
static const char *quote(const char *s) {
	static char buf[2][4096 + 8];
	static int which;
	which ^= 1;
	char *o = buf[which];
	size_t n = 0;
	o[n++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p && n < 4096; p++) {
		static const char esc[] = "\\a\\b\\t\\n\\v\\f\\r";
		const char *e = NULL;
		if (*p >= 7 && *p <= 13)
			e = esc + 2 * (*p - 7);
		if (*p == '"' || *p == '\\') {
			o[n++] = '\\';
			o[n++] = (char)*p;
		} else if (e) {
			o[n++] = e[0];
			o[n++] = e[1];
		} else if (*p < 0x20 || *p == 0x7f) {
			n += (size_t)snprintf(o + n, 5, "\\x%02x", *p);
		} else {
			o[n++] = (char)*p;
		}
	}
	o[n++] = '"';
	o[n] = 0;
	return o;
}

// ---- the bootstrap ----

static void *grow(void *p, size_t *cap, size_t n, size_t size) {
	if (n < *cap)
		return p;
	*cap = *cap ? 2 * *cap : 8;
	p = realloc(p, *cap * size);
	if (!p)
		fail(EXIT_SETUP, "init: out of memory");
	return p;
}

static void strs_add(struct strs *s, const char *v) {
	s->v = grow(s->v, &s->cap, s->n + 1, sizeof(*s->v));
	s->v[s->n++] = v;
	s->v[s->n] = NULL;
}

// str takes a NUL-terminated string of a record, advancing *p.
static const char *str(const unsigned char **p, const unsigned char *end) {
	const unsigned char *nul = memchr(*p, 0, (size_t)(end - *p));
	if (!nul)
		fail(EXIT_SETUP, "init: bad bootstrap: unterminated string");
	const char *s = (const char *)*p;
	*p = nul + 1;
	return s;
}

static uint32_t u32(const unsigned char *p) {
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint64_t u64(const unsigned char *p) {
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static void need(size_t len, size_t want, uint32_t tag) {
	if (len < want)
		fail(EXIT_SETUP, "init: bad bootstrap: record %u is short", tag);
}

static void parse(struct boot *b, const unsigned char *buf, size_t len) {
	if (len > 0 && buf[0] == '{')
		fail(EXIT_SETUP, "init: lamina sent the Go init's bootstrap: install lamina and lamina-init from one build");
	if (len < 8 || memcmp(buf, FLAT_MAGIC, 4) != 0)
		fail(EXIT_SETUP, "init: expected bootstrap");
	if (u32(buf + 4) != FLAT_PROTOCOL)
		fail(EXIT_SETUP, "init: lamina speaks protocol %u and this init %d: install lamina and lamina-init from one build",
		     u32(buf + 4), FLAT_PROTOCOL);
	const unsigned char *p = buf + 8, *end = buf + len;
	while (p < end) {
		if (end - p < 8)
			fail(EXIT_SETUP, "init: bad bootstrap: truncated record");
		uint32_t tag = u32(p), rlen = u32(p + 4);
		p += 8;
		if ((size_t)(end - p) < rlen)
			fail(EXIT_SETUP, "init: bad bootstrap: truncated record");
		const unsigned char *r = p, *rend = p + rlen;
		p = rend;
		switch (tag) {
		case T_FLAGS:
			need(rlen, 4, tag);
			b->flags = u32(r);
			break;
		case T_ROOTFS:
			b->rootfs = str(&r, rend);
			break;
		case T_HOSTNAME:
			b->hostname = str(&r, rend);
			break;
		case T_CWD:
			b->cwd = str(&r, rend);
			break;
		case T_USER:
			b->user = str(&r, rend);
			break;
		case T_MOUNT: {
			need(rlen, 16, tag);
			b->mounts = grow(b->mounts, &b->capmounts, b->nmounts, sizeof(*b->mounts));
			struct mnt *m = &b->mounts[b->nmounts++];
			m->kind = u32(r);
			m->nprop = u32(r + 4);
			m->flags = (unsigned long)u64(r + 8);
			r += 16;
			need((size_t)(rend - r), 8 * (size_t)m->nprop, tag);
			m->props = r;
			r += 8 * (size_t)m->nprop;
			m->dest = str(&r, rend);
			m->src = str(&r, rend);
			m->type = str(&r, rend);
			m->data = str(&r, rend);
			break;
		}
		case T_CGROUP1:
			strs_add(&b->cg1, str(&r, rend));
			strs_add(&b->cg1, str(&r, rend));
			break;
		case T_MASKED:
			strs_add(&b->masked, str(&r, rend));
			break;
		case T_READONLY:
			strs_add(&b->readonly, str(&r, rend));
			break;
		case T_RLIMIT:
			need(rlen, 24, tag);
			b->rlimits = grow(b->rlimits, &b->caprlimits, b->nrlimits, sizeof(*b->rlimits));
			b->rlimits[b->nrlimits++] = (struct rlim){.res = u32(r), .soft = u64(r + 8), .hard = u64(r + 16)};
			break;
		case T_ARG:
			strs_add(&b->args, str(&r, rend));
			break;
		case T_ENV:
			strs_add(&b->env, str(&r, rend));
			break;
		case T_PASSWD:
			b->passwd = (const char *)r;
			b->passwdlen = rlen;
			break;
		case T_GROUP:
			b->group = (const char *)r;
			b->grouplen = rlen;
			break;
		case T_CAPS:
			need(rlen, 40, tag);
			for (int i = 0; i < 5; i++)
				b->caps[i] = u64(r + 8 * i);
			break;
		case T_FILTER:
			b->filter = r;
			b->filterlen = rlen;
			break;
		default:
			fail(EXIT_SETUP, "init: bad bootstrap: unknown record %u", tag);
		}
	}
	if (!b->rootfs)
		fail(EXIT_SETUP, "init: bad bootstrap: no root filesystem");
}

// recv_packet reads the monitor's next packet and the descriptors that
// came with it (at most 3, into fds).
static unsigned char *recv_packet(size_t *len, int fds[3], int *nfds) {
	ssize_t size;
	while ((size = recv(SYNC_FD, NULL, 0, MSG_PEEK | MSG_TRUNC)) < 0 && errno == EINTR)
		;
	if (size <= 0)
		_exit(EXIT_SETUP); // the monitor gave up on us
	unsigned char *buf = malloc((size_t)size + 1);
	if (!buf)
		fail(EXIT_SETUP, "init: out of memory");
	char cbuf[CMSG_SPACE(3 * sizeof(int))];
	struct iovec iov = {.iov_base = buf, .iov_len = (size_t)size + 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	ssize_t n;
	while ((n = recvmsg(SYNC_FD, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	if (n <= 0)
		_exit(EXIT_SETUP);
	*nfds = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*nfds < 3)
				fds[(*nfds)++] = fd;
			else
				close(fd);
		}
	}
	*len = (size_t)n;
	return buf;
}

static void early_look_ahead(const unsigned char *buf, size_t len);

// recv_bootstrap reads the bootstrap and makes the descriptors that came
// with it (stdio, for an init spawned ahead) fds 0-2. A look-ahead that
// comes first is started (early_look_ahead).
static unsigned char *recv_bootstrap(size_t *len) {
	for (;;) {
		int fds[3], nfds;
		unsigned char *buf = recv_packet(len, fds, &nfds);
		if (*len >= 4 && memcmp(buf, AHEAD_MAGIC, 4) == 0) {
			for (int i = 0; i < nfds; i++)
				close(fds[i]);
			early_look_ahead(buf, *len);
			free(buf);
			continue;
		}
		if (nfds != 0 && nfds != 3)
			fail(EXIT_SETUP, "init: bootstrap came with %d descriptors, not stdio's 3", nfds);
		for (int i = 0; i < nfds; i++)
			if (dup3(fds[i], i, 0) < 0)
				fail(EXIT_SETUP, "init: stdio: %s", errstr(errno));
		for (int i = 0; i < nfds; i++)
			if (fds[i] > 2)
				close(fds[i]);
		return buf;
	}
}

// ---- paths inside the root filesystem ----

static int openat2_in_root(const char *path, int flags) {
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	int fd;
	while ((fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how))) < 0 && (errno == EINTR || errno == EAGAIN))
		;
	return fd;
}

// fdpath is /proc/self/fd/N, through which init mounts on what it has
// opened inside the root: the target cannot be swapped for a symlink out
// of it between resolving and mounting.
static const char *fdpath(int fd) {
	static char buf[2][32];
	static int which;
	which ^= 1;
	snprintf(buf[which], sizeof(buf[which]), "/proc/self/fd/%d", fd);
	return buf[which];
}

// mkdir_in_root resolves path inside the root as filepath-securejoin does
// (a symlink is followed with the root as "/", ".." stops at the root)
// and makes what is missing on the way: directories, and with file an
// empty file as the last component. A symlink whose target is missing
// gets its target made, inside the root. *out is the path resolved, with
// no symlink left in it. It returns errno, 0 on success.
static int mkdir_in_root(const char *path, int file, char **out) {
	size_t cap = strlen(path) + 2, rlen = 0;
	char *resolved = malloc(cap), *rest = strdup(path);
	if (!resolved || !rest)
		return ENOMEM;
	resolved[0] = 0;
	int links = 0, err = 0;
	char *p = rest;
	while (!err) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		char *end = strchr(p, '/');
		size_t clen = end ? (size_t)(end - p) : strlen(p);
		char *next = p + clen;
		while (*next == '/')
			next++;
		int last = !*next;
		if (clen == 1 && p[0] == '.') {
			p = next;
			continue;
		}
		if (clen == 2 && p[0] == '.' && p[1] == '.') {
			while (rlen > 0 && resolved[rlen - 1] != '/')
				rlen--;
			if (rlen > 0)
				rlen--;
			resolved[rlen] = 0;
			p = next;
			continue;
		}
		if (rlen + clen + 2 > cap) {
			cap = 2 * (rlen + clen + 2);
			char *r = realloc(resolved, cap);
			if (!r) {
				err = ENOMEM;
				break;
			}
			resolved = r;
		}
		size_t parent = rlen;
		resolved[rlen++] = '/';
		memcpy(resolved + rlen, p, clen);
		rlen += clen;
		resolved[rlen] = 0;
		struct open_how how = {.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS};
		int fd = (int)syscall(SYS_openat2, rootfd, resolved, &how, sizeof(how));
		if (fd < 0 && errno != ENOENT) {
			err = errno;
			break;
		}
		if (fd < 0) { // missing: make it in its parent
			resolved[parent] = 0;
			int pfd = parent ? openat2_in_root(resolved, O_PATH | O_DIRECTORY) : dup(rootfd);
			resolved[parent] = '/';
			if (pfd < 0) {
				err = errno;
				break;
			}
			char *name = resolved + parent + 1;
			if (last && file) {
				int f = openat(pfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
				if (f >= 0)
					close(f);
				else
					err = errno;
			} else if (mkdirat(pfd, name, 0755) < 0) {
				err = errno;
			}
			close(pfd);
			p = next;
			continue;
		}
		struct stat st;
		if (fstat(fd, &st) < 0) {
			err = errno;
			close(fd);
			break;
		}
		if (S_ISLNK(st.st_mode)) {
			char target[4096];
			ssize_t n = readlinkat(fd, "", target, sizeof(target) - 1);
			close(fd);
			if (n < 0) {
				err = errno;
				break;
			}
			if (++links > 40) {
				err = ELOOP;
				break;
			}
			target[n] = 0;
			// Go on from the link's parent (or the root) with the target
			// in front of what is left.
			rlen = target[0] == '/' ? 0 : parent;
			resolved[rlen] = 0;
			size_t nlen = (size_t)n + 1 + strlen(next) + 1;
			char *np = malloc(nlen);
			if (!np) {
				err = ENOMEM;
				break;
			}
			snprintf(np, nlen, "%s/%s", target, next);
			free(rest);
			rest = p = np;
			continue;
		}
		close(fd);
		if (!last && !S_ISDIR(st.st_mode))
			err = ENOTDIR;
		p = next;
	}
	free(rest);
	if (err) {
		free(resolved);
		return err;
	}
	if (!rlen) {
		resolved[0] = '/';
		resolved[1] = 0;
	}
	*out = resolved;
	return 0;
}

// open_in_root opens path inside the root for mounting on, or fails.
static int open_in_root(const char *path, const char *what) {
	int fd = openat2_in_root(path, O_PATH);
	if (fd < 0)
		fail(EXIT_SETUP, "resolve mount %s: %s", what, errstr(errno));
	return fd;
}

// ---- the root filesystem (runtime/initproc/rootfs.go) ----

// nonempty is data for mount(2): NULL for none, as x/sys/unix passes it
// (some file systems refuse an empty string).
static const char *nonempty(const char *data) { return data && *data ? data : NULL; }


static void mount_cgroups(const char *dest, unsigned long flags, const struct boot *b) {
	int fd = open_in_root(dest, dest);
	if (b->flags & F_CGROUP2) {
		if (mount("cgroup2", fdpath(fd), "cgroup2", flags, NULL) < 0)
			fail(EXIT_SETUP, "mount cgroup2: %s", errstr(errno));
		close(fd);
		return;
	}
	unsigned long ro = flags & MS_RDONLY;
	if (mount("tmpfs", fdpath(fd), "tmpfs", (flags & ~MS_RDONLY) | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755") < 0)
		fail(EXIT_SETUP, "mount cgroup tmpfs: %s", errstr(errno));
	close(fd);
	int tfd = open_in_root(dest, dest); // the tmpfs now
	for (size_t i = 0; i + 1 < b->cg1.n; i += 2) {
		const char *name = b->cg1.v[i], *data = b->cg1.v[i + 1];
		if (mkdirat(tfd, name, 0755) < 0)
			fail(EXIT_SETUP, "cgroup mount point %s: %s", name, errstr(errno));
		int dfd = openat(tfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0)
			fail(EXIT_SETUP, "cgroup mount point %s: %s", name, errstr(errno));
		if (mount("cgroup", fdpath(dfd), "cgroup", flags | MS_NOSUID | MS_NODEV | MS_NOEXEC, nonempty(data)) < 0)
			fail(EXIT_SETUP, "mount cgroup %s: %s", name, errstr(errno));
		close(dfd);
	}
	if (ro && mount("", fdpath(tfd), NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755") < 0)
		fail(EXIT_SETUP, "remount cgroup tmpfs read-only: %s", errstr(errno));
	close(tfd);
}

static void mount_in_root(const struct mnt *m, const struct boot *b) {
	// procfs and sysfs only on real directories: an image whose /proc is
	// a symlink would otherwise get the masks and read-only remounts,
	// which are done by path, applied somewhere else (CVE-2019-19921).
	if (!strcmp(m->type, "proc") || !strcmp(m->type, "sysfs")) {
		int fd = openat2_in_root(m->dest, O_PATH | O_NOFOLLOW);
		if (fd >= 0) {
			struct stat st;
			int isdir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
			close(fd);
			if (!isdir)
				fail(EXIT_SETUP, "cannot mount %s on %s: not a directory in the image", m->type, m->dest);
		}
	}
	unsigned long flags = m->flags;
	char *dest;
	if (m->kind == M_CGROUP) {
		int err = mkdir_in_root(m->dest, 0, &dest);
		if (err)
			fail(EXIT_SETUP, "mount point %s: %s", m->dest, errstr(err));
		mount_cgroups(dest, flags, b);
		free(dest);
		return;
	}
	int isbind = m->kind == M_BIND;
	int err;
	if (isbind) {
		struct stat st;
		if (stat(m->src, &st) < 0)
			fail(EXIT_SETUP, "bind mount source %s: stat %s: %s", m->src, m->src, errstr(errno));
		err = mkdir_in_root(m->dest, !S_ISDIR(st.st_mode), &dest);
	} else {
		err = mkdir_in_root(m->dest, 0, &dest);
	}
	if (err)
		fail(EXIT_SETUP, "mount point %s: %s", m->dest, errstr(err));
	int fd = open_in_root(dest, m->dest);
	if (isbind) {
		if (mount(m->src, fdpath(fd), NULL, flags & (MS_BIND | MS_REC), NULL) < 0)
			fail(EXIT_SETUP, "bind mount %s on %s: %s", m->src, m->dest, errstr(errno));
		// Flags other than bind/rec only take effect on a remount, of the
		// new mount: open the path again to reach it.
		unsigned long rest = flags & ~(unsigned long)(MS_BIND | MS_REC);
		if (rest) {
			int nfd = open_in_root(dest, m->dest);
			if (mount("", fdpath(nfd), NULL, rest | MS_BIND | MS_REMOUNT, NULL) < 0)
				fail(EXIT_SETUP, "remount %s: %s", m->dest, errstr(errno));
			close(nfd);
		}
	} else {
		unsigned long ro = flags & MS_RDONLY;
		if (!strcmp(m->type, "sysfs") || !strcmp(m->type, "proc"))
			ro = 0; // remounted read-only below: some kernels refuse ro at mount time
		if (mount(m->src, fdpath(fd), m->type, (flags & ~(unsigned long)MS_RDONLY) | ro, nonempty(m->data)) < 0)
			fail(EXIT_SETUP, "mount %s on %s: %s", m->type, m->dest, errstr(errno));
		if ((flags & MS_RDONLY) && !ro) {
			int nfd = open_in_root(dest, m->dest);
			if (mount("", fdpath(nfd), NULL, flags | MS_REMOUNT, nonempty(m->data)) < 0)
				fail(EXIT_SETUP, "remount %s read-only: %s", m->dest, errstr(errno));
			close(nfd);
		}
	}
	close(fd);
	for (uint32_t i = 0; i < m->nprop; i++) {
		int nfd = open_in_root(dest, m->dest);
		if (mount("", fdpath(nfd), NULL, (unsigned long)u64(m->props + 8 * i), NULL) < 0)
			fail(EXIT_SETUP, "mount propagation of %s: %s", m->dest, errstr(errno));
		close(nfd);
	}
	free(dest);
}

// setup_dev fills the container's /dev: device nodes, the standard
// symlinks, and /dev/ptmx pointing at the container's own devpts.
static void setup_dev(int terminal) {
	static const struct {
		const char *name;
		unsigned major, minor;
	} devices[] = {{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
	static const char *links[][2] = {
		{"/proc/self/fd", "fd"},     {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
		{"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"},       {"/proc/kcore", "core"},
	};
	int dev = openat2_in_root("/dev", O_PATH | O_DIRECTORY);
	if (dev < 0)
		fail(EXIT_SETUP, "open /dev: %s", errstr(errno));
	mode_t old = umask(0);
	for (size_t i = 0; i < sizeof(devices) / sizeof(devices[0]); i++)
		if (mknodat(dev, devices[i].name, S_IFCHR | 0666, makedev(devices[i].major, devices[i].minor)) < 0 && errno != EEXIST)
			fail(EXIT_SETUP, "mknod /dev/%s: %s", devices[i].name, errstr(errno));
	umask(old);
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		unlinkat(dev, links[i][1], 0);
		if (symlinkat(links[i][0], dev, links[i][1]) < 0)
			fail(EXIT_SETUP, "symlink /dev/%s: %s", links[i][1], errstr(errno));
	}
	if (terminal) {
		int f = openat(dev, "console", O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (f < 0 && errno != EEXIST && errno != ELOOP)
			fail(EXIT_SETUP, "/dev/console: %s", errstr(errno));
		if (f >= 0)
			close(f);
	}
	close(dev);
}

// pivot makes the root filesystem the root and detaches the old one, as
// runc does with pivot_root(".", ".").
static void pivot(const char *rootfs) {
	int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (oldroot < 0)
		fail(EXIT_SETUP, "open old root: %s", errstr(errno));
	if (chdir(rootfs) < 0)
		fail(EXIT_SETUP, "chdir rootfs: %s", errstr(errno));
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		fail(EXIT_SETUP, "pivot_root: %s", errstr(errno));
	if (fchdir(oldroot) < 0)
		fail(EXIT_SETUP, "fchdir old root: %s", errstr(errno));
	if (mount("", ".", NULL, MS_SLAVE | MS_REC, NULL) < 0)
		fail(EXIT_SETUP, "make old root rslave: %s", errstr(errno));
	if (umount2(".", MNT_DETACH) < 0)
		fail(EXIT_SETUP, "detach old root: %s", errstr(errno));
	if (chdir("/") < 0)
		fail(EXIT_SETUP, "chdir /: %s", errstr(errno));
	close(oldroot);
}

static void prepare_rootfs(const struct boot *b) {
	if (mount("", "/", NULL, MS_SLAVE | MS_REC, NULL) < 0)
		fail(EXIT_SETUP, "make / rslave: %s", errstr(errno));
	if (mount(b->rootfs, b->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
		fail(EXIT_SETUP, "bind rootfs onto itself: %s", errstr(errno));
	// A private rootfs keeps the container's mounts out of the host's
	// mount tree and lets pivot_root work when / is shared.
	if (mount("", b->rootfs, NULL, MS_PRIVATE, NULL) < 0)
		fail(EXIT_SETUP, "make rootfs private: %s", errstr(errno));
	rootfd = open(b->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		fail(EXIT_SETUP, "open rootfs: %s", errstr(errno));
	for (size_t i = 0; i < b->nmounts; i++)
		mount_in_root(&b->mounts[i], b);
	setup_dev(b->flags & F_TERMINAL);
	close(rootfd);
	rootfd = -1;
	pivot(b->rootfs);
}

static void readonly_path(const char *p) {
	if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
		if (errno == ENOENT)
			return;
		fail(EXIT_SETUP, "bind %s: %s", p, errstr(errno));
	}
	if (mount("", p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		fail(EXIT_SETUP, "remount %s read-only: %s", p, errstr(errno));
}

static void mask_path(const char *p) {
	struct stat st;
	if (lstat(p, &st) < 0)
		return; // nothing to mask
	if (S_ISDIR(st.st_mode)) {
		if (mount("tmpfs", p, "tmpfs", MS_RDONLY, NULL) < 0)
			fail(EXIT_SETUP, "mask %s: %s", p, errstr(errno));
		return;
	}
	if (mount("/dev/null", p, NULL, MS_BIND, NULL) < 0 && errno != ENOENT)
		fail(EXIT_SETUP, "mask %s: %s", p, errstr(errno));
}

static void finalize_rootfs(const struct boot *b) {
	if ((b->flags & F_ROOT_RO) && mount("", "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
		fail(EXIT_SETUP, "remount / read-only: %s", errstr(errno));
	for (size_t i = 0; i < b->readonly.n; i++)
		readonly_path(b->readonly.v[i]);
	for (size_t i = 0; i < b->masked.n; i++)
		mask_path(b->masked.v[i]);
}

// setup_console makes a pty in the container's devpts, binds its slave
// onto /dev/console, makes it the controlling terminal and stdio, and
// hands the master to the monitor.
static void setup_console(void) {
	int master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0)
		fail(EXIT_SETUP, "open ptmx: %s", errstr(errno));
	int unlock = 0;
	if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
		fail(EXIT_SETUP, "unlock pty: %s", errstr(errno));
	unsigned n;
	if (ioctl(master, TIOCGPTN, &n) < 0)
		fail(EXIT_SETUP, "pty number: %s", errstr(errno));
	char slave_path[64];
	snprintf(slave_path, sizeof(slave_path), "/dev/pts/%u", n);
	int slave = open(slave_path, O_RDWR | O_NOCTTY);
	if (slave < 0)
		fail(EXIT_SETUP, "open pty slave: %s", errstr(errno));
	if (mount(slave_path, "/dev/console", NULL, MS_BIND, NULL) < 0)
		fail(EXIT_SETUP, "bind /dev/console: %s", errstr(errno));
	send_json("pty", NULL, 0, master);
	if (setsid() < 0 && errno != EPERM)
		fail(EXIT_SETUP, "setsid: %s", errstr(errno));
	if (ioctl(slave, TIOCSCTTY, 0) < 0)
		fail(EXIT_SETUP, "set controlling terminal: %s", errstr(errno));
	for (int i = 0; i < 3; i++)
		if (dup3(slave, i, 0) < 0)
			fail(EXIT_SETUP, "pty stdio: %s", errstr(errno));
	if (slave > 2)
		close(slave);
	close(master);
}

static void loopback_up(void) {
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fail(EXIT_SETUP, "loopback: %s", errstr(errno));
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		fail(EXIT_SETUP, "loopback flags: %s", errstr(errno));
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		fail(EXIT_SETUP, "loopback up: %s", errstr(errno));
	close(fd);
}

// enter_namespaces unshares the mount and cgroup namespaces: the monitor
// has mounted the root filesystem and put init into its cgroups by now.
static void enter_namespaces(const struct boot *b) {
	int flags = 0;
	if (b->flags & F_NEWNS)
		flags |= CLONE_NEWNS;
	if (b->flags & F_NEWCGROUP)
		flags |= CLONE_NEWCGROUP;
	if (flags && unshare(flags) < 0)
		fail(EXIT_SETUP, "unshare mount and cgroup namespaces: %s", errstr(errno));
}

static void setup_container(const struct boot *b) {
	if (b->flags & F_NETNS)
		loopback_up();
	prepare_rootfs(b);
	if (b->flags & F_TERMINAL)
		setup_console();
	finalize_rootfs(b);
	if ((b->flags & F_UTSNS) && b->hostname && b->hostname[0] && sethostname(b->hostname, strlen(b->hostname)) < 0)
		fail(EXIT_SETUP, "sethostname: %s", errstr(errno));
	for (size_t i = 0; i < b->nrlimits; i++) {
		struct rlimit rl = {.rlim_cur = b->rlimits[i].soft, .rlim_max = b->rlimits[i].hard};
		if (setrlimit((int)b->rlimits[i].res, &rl) < 0)
			fail(EXIT_SETUP, "setrlimit %u %llu:%llu: %s", b->rlimits[i].res, (unsigned long long)rl.rlim_cur,
			     (unsigned long long)rl.rlim_max, errstr(errno));
	}
}

// ---- the user (runtime/initproc/user.go) ----

// rows is a passwd- or group-style file split into lines of fields.
struct rows {
	char ***v;
	size_t n, cap;
};

// parse_colon splits text as parseColonFile: trimmed lines, no empty or
// comment lines, fields split on ':' and padded to n.
static void parse_colon(char *text, size_t n, struct rows *out) {
	for (char *line = text, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		while (*line == ' ' || *line == '\t' || *line == '\r' || *line == '\v' || *line == '\f')
			line++;
		char *e = line + strlen(line);
		while (e > line && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\v' || e[-1] == '\f'))
			*--e = 0;
		if (!*line || *line == '#')
			continue;
		size_t nf = 1;
		for (char *c = line; *c; c++)
			nf += *c == ':';
		size_t cap = nf > n ? nf : n;
		char **f = calloc(cap + 1, sizeof(char *));
		if (!f)
			fail(EXIT_SETUP, "init: out of memory");
		size_t i = 0;
		for (char *c = line;; c++) {
			if (*c == ':' || !*c) {
				int end = !*c;
				*c = 0;
				f[i++] = line;
				line = c + 1;
				if (end)
					break;
			}
		}
		for (; i < n; i++)
			f[i] = "";
		out->v = grow(out->v, &out->cap, out->n, sizeof(*out->v));
		out->v[out->n++] = f;
	}
}

// atoi_go is strconv.Atoi: an optional sign and decimal digits, nothing
// else, within range.
static int atoi_go(const char *s, long *out) {
	const char *p = s;
	int neg = 0;
	if (*p == '+' || *p == '-')
		neg = *p++ == '-';
	if (!*p)
		return -1;
	long long v = 0;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		if (v > (INT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (*p - '0');
	}
	*out = (long)(neg ? -v : v);
	return 0;
}

static char *read_text(const char *data, size_t len) {
	char *t = malloc(len + 1);
	if (!t)
		fail(EXIT_SETUP, "init: out of memory");
	if (len)
		memcpy(t, data, len);
	t[len] = 0;
	return t;
}

static char *read_file(const char *path) {
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return read_text("", 0);
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf)
			fail(EXIT_SETUP, "init: out of memory");
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == cap)
			buf = realloc(buf, cap *= 2);
	}
	close(fd);
	char *t = read_text(buf ? buf : "", n);
	free(buf);
	return t;
}

// resolve_user resolves docker's -u USER[:GROUP] against the image's
// passwd and group rows (resolveUser).
static void resolve_user(const char *spec, struct rows *passwd, struct rows *groups, struct user *u) {
	u->uid = u->gid = 0;
	u->home = "/";
	u->groups = NULL;
	u->ngroups = 0;
	char *user = strdup(spec ? spec : "");
	if (!user)
		fail(EXIT_SETUP, "init: out of memory");
	char *group = strchr(user, ':');
	if (group)
		*group++ = 0;
	const char *user_part = *user ? user : "0";
	long uidnum;
	int numerr = atoi_go(user_part, &uidnum);
	int found = 0;
	for (size_t i = 0; i < passwd->n; i++) {
		char **p = passwd->v[i];
		if (!strcmp(p[0], user_part) || (numerr == 0 && !strcmp(p[2], user_part))) {
			long uid, gid;
			if (atoi_go(p[2], &uid) || atoi_go(p[3], &gid))
				continue;
			u->uid = uid;
			u->gid = gid;
			u->home = p[5];
			found = 1;
			user_part = p[0];
			break;
		}
	}
	if (!found) {
		if (numerr)
			fail(EXIT_SETUP, "unable to find user %s: no matching entries in passwd file", user_part);
		if (uidnum < 0)
			fail(EXIT_SETUP, "invalid user %s", quote(spec));
		u->uid = uidnum;
		u->gid = 0;
	}
	if (group) {
		long gidnum;
		int gerr = atoi_go(group, &gidnum);
		int gfound = 0;
		for (size_t i = 0; i < groups->n; i++) {
			char **g = groups->v[i];
			long gid;
			if ((!strcmp(g[0], group) || (gerr == 0 && !strcmp(g[2], group))) && atoi_go(g[2], &gid) == 0) {
				u->gid = gid;
				gfound = 1;
				break;
			}
		}
		if (!gfound) {
			if (gerr || gidnum < 0)
				fail(EXIT_SETUP, "unable to find group %s: no matching entries in group file", group);
			u->gid = gidnum;
		}
	} else if (found) {
		// Supplementary groups come from group membership by name, as
		// runc does, only when no group was given explicitly.
		size_t cap = 0;
		for (size_t i = 0; i < groups->n; i++) {
			char **g = groups->v[i];
			char *members = strdup(g[3]);
			if (!members)
				fail(EXIT_SETUP, "init: out of memory");
			for (char *m = members, *next; m; m = next) {
				next = strchr(m, ',');
				if (next)
					*next++ = 0;
				long gid;
				if (!strcmp(m, user_part) && atoi_go(g[2], &gid) == 0 && gid != u->gid) {
					u->groups = grow(u->groups, &cap, u->ngroups, sizeof(long));
					u->groups[u->ngroups++] = gid;
				}
			}
			free(members);
		}
	}
}

// ---- the command (runtime/initproc/init.go) ----

// search_path is the PATH the command is looked up along: the last PATH=
// of env, else docker's default (SearchPath).
static const char *search_path(const struct strs *env) {
	const char *p = DEFAULT_PATH;
	for (size_t i = 0; i < env->n; i++)
		if (!strncmp(env->v[i], "PATH=", 5))
			p = env->v[i] + 5;
	return p;
}

// look_path finds argv0 in the container's PATH, as lookPath.
static char *look_path(const char *argv0, const struct strs *env) {
	if (strchr(argv0, '/')) {
		struct stat st;
		if (stat(argv0, &st) < 0)
			fail(EXIT_NOT_FOUND, "exec: %s: stat %s: no such file or directory", quote(argv0), argv0);
		return strdup(argv0);
	}
	const char *path_env = search_path(env);
	char *denied = NULL;
	if (*path_env) {
		char *list = strdup(path_env);
		for (char *dir = list, *next; dir; dir = next) {
			next = strchr(dir, ':');
			if (next)
				*next++ = 0;
			const char *d = *dir ? dir : ".";
			size_t len = strlen(d) + strlen(argv0) + 2;
			char *p = malloc(len);
			if (!p)
				fail(EXIT_SETUP, "init: out of memory");
			snprintf(p, len, "%s/%s", d, argv0);
			struct stat st;
			if (stat(p, &st) < 0 || S_ISDIR(st.st_mode)) {
				free(p);
				continue;
			}
			if (!(st.st_mode & 0111)) {
				if (!denied)
					denied = p;
				else
					free(p);
				continue;
			}
			free(list);
			free(denied);
			return p;
		}
		free(list);
	}
	if (denied)
		return denied; // execve reports the permission error: 126
	fail(EXIT_NOT_FOUND, "exec: %s: executable file not found in $PATH", quote(argv0));
}

static void mkdir_all(const char *path) {
	struct stat st;
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return;
	char *buf = strdup(path);
	size_t len = strlen(buf);
	for (size_t i = 1; i <= len; i++) {
		if (i < len && buf[i] != '/')
			continue;
		if (buf[i - 1] == '/')
			continue;
		char saved = buf[i];
		buf[i] = 0;
		// As os.MkdirAll: what exists must be a directory, and the error
		// names the first part that is not.
		if (mkdir(buf, 0755) < 0) {
			int e = errno;
			if (e == EEXIST)
				e = stat(buf, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
			if (e)
				fail(EXIT_SETUP, "working directory %s: mkdir %s: %s", path, buf, errstr(e));
		}
		buf[i] = saved;
	}
	free(buf);
}

// load_seccomp installs the filter on this thread, and with tsync on the
// process's other threads too (as the Go init and libseccomp do).
static void load_seccomp(const struct boot *b, int tsync) {
	if (!b->filterlen)
		return;
	if (b->filterlen % 8 || b->filterlen / 8 > BPF_MAXINSNS)
		fail(EXIT_SETUP, "seccomp: a filter of %zu bytes is no BPF program", b->filterlen);
	struct sock_filter *insns = malloc(b->filterlen);
	if (!insns)
		fail(EXIT_SETUP, "init: out of memory");
	memcpy(insns, b->filter, b->filterlen);
	struct sock_fprog prog = {.len = (unsigned short)(b->filterlen / 8), .filter = insns};
	long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, tsync ? SECCOMP_FILTER_FLAG_TSYNC : 0, &prog);
	if (r < 0)
		fail(EXIT_SETUP, "seccomp: load filter: %s", errstr(errno));
	if (r > 0)
		fail(EXIT_SETUP, "seccomp: load filter: thread %ld cannot take it", r);
	free(insns);
}

static int has_cap(uint64_t set, int c) { return c < 64 && (set >> c) & 1; }

// drop_bounding drops every capability outside the bounding set, while
// init still has CAP_SETPCAP (moby/sys/capability's Apply(BOUNDS)).
static void drop_bounding(const struct boot *b) {
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];
	if (syscall(SYS_capget, &hdr, data) < 0)
		fail(EXIT_SETUP, "apply bounding capabilities: %s", errstr(errno));
	if (!(data[0].effective & (1u << CAP_SETPCAP)))
		return;
	for (int c = 0; c <= last_cap; c++) {
		if (has_cap(b->caps[0], c))
			continue;
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
			fail(EXIT_SETUP, "apply bounding capabilities: %s", errstr(errno));
	}
}

// apply_caps sets the effective, permitted, inheritable and ambient sets
// after the user switch.
static void apply_caps(const struct boot *b) {
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];
	for (int i = 0; i < 2; i++) {
		data[i].effective = (uint32_t)(b->caps[1] >> (32 * i));
		data[i].permitted = (uint32_t)(b->caps[2] >> (32 * i));
		data[i].inheritable = (uint32_t)(b->caps[3] >> (32 * i));
	}
	if (syscall(SYS_capset, &hdr, data) < 0)
		fail(EXIT_SETUP, "apply capabilities: %s", errstr(errno));
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		fail(EXIT_SETUP, "apply capabilities: %s", errstr(errno));
	for (int c = 0; c <= last_cap; c++)
		if (has_cap(b->caps[4], c) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0 && errno != EINVAL)
			fail(EXIT_SETUP, "apply capabilities: %s", errstr(errno));
}

static void set_user(const struct user *u) {
	gid_t *gs = calloc(u->ngroups + 1, sizeof(gid_t));
	if (!gs)
		fail(EXIT_SETUP, "init: out of memory");
	for (size_t i = 0; i < u->ngroups; i++)
		gs[i] = (gid_t)u->groups[i];
	// Raw system calls: this thread only, as the Go init (glibc's
	// wrappers would signal every thread; there is only this one).
	if (syscall(SYS_setgroups, u->ngroups, gs) < 0)
		fail(EXIT_SETUP, "setgroups: %s", errstr(errno));
	if (syscall(SYS_setresgid, u->gid, u->gid, u->gid) < 0)
		fail(EXIT_SETUP, "setgid %ld: %s", u->gid, errstr(errno));
	if (syscall(SYS_setresuid, u->uid, u->uid, u->uid) < 0)
		fail(EXIT_SETUP, "setuid %ld: %s", u->uid, errstr(errno));
	free(gs);
}

// close_exec_from marks every fd from lowest up close-on-exec, so nothing
// of lamina's survives into the command (CVE-2024-21626).
static void close_exec_from(int lowest) {
	if (syscall(SYS_close_range, lowest, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
		return;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		fail(EXIT_SETUP, "list fds: %s", errstr(errno));
	int self = dirfd(d);
	for (struct dirent *e; (e = readdir(d));) {
		long fd;
		if (atoi_go(e->d_name, &fd) == 0 && fd >= lowest && fd != self)
			fcntl((int)fd, F_SETFD, FD_CLOEXEC);
	}
	closedir(d);
}


// exec_process drops to the user and privileges and execs the command,
// in runc's order (see execProcess); early says the seccomp filter is
// loaded and the bounding set dropped already (see the executor).
__attribute__((noreturn)) static void exec_process(const struct boot *b, const struct user *u, const char *path, int early) {
	struct strs env = {0};
	strs_add(&env, NULL); // an empty, NULL-terminated list
	env.n = 0;
	int has_home = 0;
	for (size_t i = 0; i < b->env.n; i++) {
		strs_add(&env, b->env.v[i]);
		has_home |= !strncmp(b->env.v[i], "HOME=", 5);
	}
	if (!has_home) {
		size_t len = strlen(u->home) + 6;
		char *h = malloc(len);
		if (!h)
			fail(EXIT_SETUP, "init: out of memory");
		snprintf(h, len, "HOME=%s", u->home);
		strs_add(&env, h);
	}
	const char *cwd = b->cwd && *b->cwd ? b->cwd : "/";
	mkdir_all(cwd);
	if (chdir(cwd) < 0)
		fail(EXIT_CANNOT_EXECUTE, "chdir to cwd (%s) set in config.json failed: %s", quote(cwd), errstr(errno));
	// CVE-2024-21626: a leaked host directory fd as cwd would make getcwd
	// fail or point outside the root; refuse to run in that case.
	char wd[4096];
	if (!getcwd(wd, sizeof(wd)) || wd[0] != '/')
		fail(EXIT_SETUP, "current working directory is outside of the container: %s", errstr(errno));
	if (b->flags & F_NNP) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
			fail(EXIT_SETUP, "no_new_privs: %s", errstr(errno));
	} else if (!early) {
		load_seccomp(b, 1);
	}
	if (!early)
		drop_bounding(b);
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		fail(EXIT_SETUP, "keepcaps: %s", errstr(errno));
	set_user(u);
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
		fail(EXIT_SETUP, "keepcaps: %s", errstr(errno));
	apply_caps(b);
	// Before the late seccomp load, as runc does: a profile strict enough
	// to refuse what closing takes must still let the command start.
	close_exec_from(3);
	if (b->flags & F_NNP)
		load_seccomp(b, 1);
	// What is ignored where lamina was started stays ignored across
	// execve; the command gets the default disposition and no mask.
	signal(SIGHUP, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(path, (char *const *)b->args.v, (char *const *)env.v);
	int e = errno;
	fail(e == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXECUTE, "exec: %s: %s", quote(b->args.v[0]), errstr(e));
}

// ---- the executor ----

// With docker's default profile (F_EARLY_PRIVILEGES, without
// no_new_privs) the command is exec'd by a second thread, the executor,
// made once init has its namespaces. It loads the seccomp filter and
// drops the bounding set on itself while init's main thread builds the
// root filesystem: the filter's load (its JIT, 1-4 ms here) leaves the
// path of the start. The filter, the bounding set and the credentials are
// each thread's own, so the thread that has them is the one that execs,
// and becomes the process (execve ends the other threads; the process
// keeps its pid, 1). Everything else init sets up (mounts, root, cwd,
// stdio, session, hostname, rlimits, signal handlers) is the process's,
// which the executor shares. Once the main thread has the start message
// it hands over the user and the path and waits for the end. The docker
// profile allows every system call the executor makes after the load:
// its wait (futex) and exec_process's.
struct executor {
	pthread_t t;
	const struct boot *b;
	int pdeathsig;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	const struct user *u; // set with path by hand_over
	const char *path;
};

static struct executor executor;

static void *executor_run(void *arg) {
	struct executor *x = arg;
	// A new thread has no parent-death signal; this one becomes the
	// process, which had the monitor's.
	if (x->pdeathsig && prctl(PR_SET_PDEATHSIG, x->pdeathsig, 0, 0, 0) < 0)
		fail(EXIT_SETUP, "parent death signal: %s", errstr(errno));
	load_seccomp(x->b, 0); // not on the main thread, which still mounts
	drop_bounding(x->b);
	pthread_mutex_lock(&x->mu);
	while (!x->path)
		pthread_cond_wait(&x->cv, &x->mu);
	pthread_mutex_unlock(&x->mu);
	exec_process(x->b, x->u, x->path, 1);
}

static void start_executor(const struct boot *b) {
	executor.b = b;
	if (prctl(PR_GET_PDEATHSIG, &executor.pdeathsig, 0, 0, 0) < 0)
		executor.pdeathsig = 0;
	pthread_mutex_init(&executor.mu, NULL);
	pthread_cond_init(&executor.cv, NULL);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 << 10);
	int err = pthread_create(&executor.t, &attr, executor_run, &executor);
	pthread_attr_destroy(&attr);
	if (err)
		fail(EXIT_SETUP, "init: start the executor: %s", errstr(err));
}

// hand_over gives the executor the command, and waits for the execve (or
// a failure, which ends the process) to end this thread.
__attribute__((noreturn)) static void hand_over(const struct user *u, const char *path) {
	pthread_mutex_lock(&executor.mu);
	executor.u = u;
	executor.path = path;
	pthread_cond_signal(&executor.cv);
	pthread_mutex_unlock(&executor.mu);
	for (;;)
		pause();
}

static int read_last_cap(void) {
	int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return CAP_LAST_CAP;
	char buf[16] = {0};
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	long v;
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = 0;
	if (n <= 0 || atoi_go(buf, &v) || v < 0 || v > 63)
		return CAP_LAST_CAP;
	return (int)v;
}

// ---- looking up ahead ----

struct ahead_path {
	int root; // the root filesystem, O_PATH
	char *path;
};

// ahead_open resolves a path inside the root, as everything init resolves
// there (a symlink in the image cannot send it to the host's files).
static void ahead_open(const struct ahead_path *a) {
	struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	int fd = (int)syscall(SYS_openat2, a->root, a->path, &how, sizeof(how));
	if (fd >= 0)
		close(fd);
}

// ahead_work is what look_ahead's threads (and init's own) do: take the
// next path of the list and look it up, until none is left.
struct ahead_work {
	struct ahead_path *a;
	size_t n;
	size_t next; // the index of the next path, taken atomically
};

static void *ahead_worker(void *arg) {
	struct ahead_work *w = arg;
	for (;;) {
		size_t i = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED);
		if (i >= w->n)
			return NULL;
		ahead_open(&w->a[i]);
	}
}

// AHEAD_THREADS is how many threads look ahead, init's included: laminafs
// answers a container's first lookups with two readers (its
// InlineBurst), so a third lookup in flight keeps both busy, and a
// thread per path (seven for a busybox start) cost more to make than
// they saved.
enum { AHEAD_THREADS = 3 };

static void ahead_add(struct ahead_path *a, size_t *n, size_t max, int root, const char *p1, const char *p2) {
	if (*n >= max)
		return;
	size_t len = strlen(p1) + (p2 ? strlen(p2) : 0) + 2;
	char *path = malloc(len);
	if (!path)
		return;
	snprintf(path, len, "%s%s%s", p1, p2 ? "/" : "", p2 ? p2 : "");
	a[*n].root = root;
	a[(*n)++].path = path;
}

// AHEAD_MAX is the most paths a look-ahead takes (initproc.MaxAheadPaths).
enum { AHEAD_MAX = 24 };

// ahead_run is a look-ahead: its paths inside root, and the threads that
// look them up.
struct ahead_run {
	struct ahead_path a[AHEAD_MAX];
	struct ahead_work w;
	pthread_t t[AHEAD_THREADS];
	int started[AHEAD_THREADS];
	int root;
};

// ahead_start starts at most threads threads on r's n paths, leaving the
// last keep of them to the caller's ahead_finish.
static void ahead_start(struct ahead_run *r, size_t n, size_t threads, size_t keep) {
	r->w = (struct ahead_work){.a = r->a, .n = n};
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	for (size_t i = 0; i < threads && i + keep < n; i++)
		r->started[i] = pthread_create(&r->t[i], &attr, ahead_worker, &r->w) == 0;
	pthread_attr_destroy(&attr);
}

// ahead_finish looks up what no thread took, waits for the threads, and
// lets go of r's paths and root.
static void ahead_finish(struct ahead_run *r) {
	ahead_worker(&r->w);
	for (size_t i = 0; i < AHEAD_THREADS; i++)
		if (r->started[i])
			pthread_join(r->t[i], NULL);
	for (size_t i = 0; i < r->w.n; i++)
		free(r->a[i].path);
	close(r->root);
}

// look_ahead looks up, in parallel, the paths of the root filesystem that
// the setup and the command's lookup will resolve one after the other:
// the mount points (those not below another mount) and the candidates
// for the command. On laminafs each first lookup is a FUSE round trip;
// sent together they keep the server busy (AHEAD_THREADS). The lookups are made in this
// mount namespace, before init leaves it (the dentries are the
// filesystem's, shared), inside the root as every other path init
// resolves there, and change nothing: what they find is resolved again
// when it is used.
static void look_ahead(const struct boot *b) {
	enum { MAX = AHEAD_MAX };
	struct ahead_run r;
	memset(&r, 0, sizeof(r));
	struct ahead_path *a = r.a;
	size_t n = 0;
	int root = r.root = open(b->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return; // setup reports it
	for (size_t i = 0; i < b->nmounts; i++) {
		const char *d = b->mounts[i].dest;
		int covered = 0;
		for (size_t j = 0; j < b->nmounts && !covered; j++) {
			const char *o = b->mounts[j].dest;
			size_t ol = strlen(o);
			covered = j != i && ol < strlen(d) && !strncmp(d, o, ol) && (d[ol] == '/' || (ol > 0 && o[ol - 1] == '/'));
		}
		if (!covered)
			ahead_add(a, &n, MAX, root, d, NULL);
	}
	if (b->args.n) {
		const char *argv0 = b->args.v[0];
		if (strchr(argv0, '/')) {
			ahead_add(a, &n, MAX, root, argv0, NULL);
		} else {
			char *list = strdup(search_path(&b->env));
			for (char *dir = list, *next; dir && *dir; dir = next) {
				next = strchr(dir, ':');
				if (next)
					*next++ = 0;
				if (*dir == '/')
					ahead_add(a, &n, MAX, root, dir, argv0);
			}
			free(list);
		}
	}
	if (!(b->flags & F_USERDB)) {
		ahead_add(a, &n, MAX, root, "/etc/passwd", NULL);
		ahead_add(a, &n, MAX, root, "/etc/group", NULL);
	}
	// This thread is the last of AHEAD_THREADS.
	ahead_start(&r, n, AHEAD_THREADS - 1, 1);
	ahead_finish(&r);
}

// The look-ahead the monitor sent before the bootstrap, if any
// (early_look_ahead): its lookups run while init waits for the bootstrap,
// and are waited for (early_join) before init leaves the mount namespace
// they were made in.
static struct ahead_run prelook = {.root = -1};
static int prelook_on;

// early_look_ahead starts AHEAD_THREADS threads looking up the paths of
// the look-ahead in buf, inside its root. One it cannot read, or a second
// one, is ignored: the bootstrap says everything init must know.
static void early_look_ahead(const unsigned char *buf, size_t len) {
	if (prelook_on || len < 8 || u32(buf + 4) != FLAT_PROTOCOL)
		return;
	const char *rootfs = NULL;
	const char *paths[AHEAD_MAX];
	size_t np = 0;
	const unsigned char *p = buf + 8, *end = buf + len;
	while (p < end) {
		if (end - p < 8)
			return;
		uint32_t tag = u32(p), rlen = u32(p + 4);
		p += 8;
		if ((size_t)(end - p) < rlen || rlen == 0 || p[rlen - 1] != 0)
			return;
		if (tag == T_ROOTFS)
			rootfs = (const char *)p;
		else if (tag == T_AHEAD_PATH && np < AHEAD_MAX)
			paths[np++] = (const char *)p;
		p += rlen;
	}
	if (!rootfs || !np)
		return;
	prelook.root = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (prelook.root < 0)
		return;
	size_t n = 0;
	for (size_t i = 0; i < np; i++)
		ahead_add(prelook.a, &n, AHEAD_MAX, prelook.root, paths[i], NULL);
	ahead_start(&prelook, n, AHEAD_THREADS, 0);
	prelook_on = 1;
}

// early_join waits for the look-ahead's lookups (what no thread took, this
// one makes) and reports whether there was one.
static int early_join(void) {
	if (!prelook_on)
		return 0;
	ahead_finish(&prelook);
	return 1;
}

int main(int argc, char **argv) {
	// The timer slack of lamina's caller (the run's monitor raised its
	// own, which init inherits): set before init makes its threads, for
	// them and the command.
	for (int i = 2; i < argc; i++)
		if (!strncmp(argv[i], "--timer-slack=", 14)) {
			unsigned long ns = strtoul(argv[i] + 14, NULL, 10);
			if (ns)
				prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0);
		}
	// Docker's umask, whatever the monitor's (a FUSE server runs with 0).
	umask(022);
	last_cap = read_last_cap();
	size_t len;
	unsigned char *buf = recv_bootstrap(&len);
	struct boot b = {0};
	parse(&b, buf, len);
	// The monitor's look-ahead, when it sent one, covered the same paths
	// but /etc/passwd and /etc/group, which init reads only without a
	// user database (the monitor sends one for laminafs, as a rule).
	if (!early_join())
		look_ahead(&b);
	enter_namespaces(&b);
	int early = (b.flags & F_EARLY_PRIVILEGES) && !(b.flags & F_NNP);
	if (early)
		start_executor(&b);
	setup_container(&b);

	struct user u;
	struct rows passwd = {0}, groups = {0};
	if (b.flags & F_USERDB) {
		parse_colon(read_text(b.passwd ? b.passwd : "", b.passwdlen), 7, &passwd);
		parse_colon(read_text(b.group ? b.group : "", b.grouplen), 4, &groups);
	} else {
		parse_colon(read_file("/etc/passwd"), 7, &passwd);
		parse_colon(read_file("/etc/group"), 4, &groups);
	}
	resolve_user(b.user, &passwd, &groups, &u);
	if (!b.args.n)
		fail(EXIT_NOT_FOUND, "no command specified");
	char *path = look_path(b.args.v[0], &b.env);

	send_json("ready", NULL, 0, -1);
	char start[256];
	ssize_t n;
	while ((n = recv(SYNC_FD, start, sizeof(start) - 1, 0)) < 0 && errno == EINTR)
		;
	// The monitor gave up on us (container removed before start).
	if (n <= 0)
		_exit(EXIT_SETUP);
	start[n] = 0;
	if (!strstr(start, "\"start\""))
		_exit(EXIT_SETUP);
	if (early)
		hand_over(&u, path);
	exec_process(&b, &u, path, 0);
}
