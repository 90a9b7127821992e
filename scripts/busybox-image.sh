#!/bin/sh
# busybox-image.sh builds a root filesystem from Debian's busybox-static
# (the binary and its applets as symlinks, /etc/passwd and /etc/group, the
# usual empty dirs: what internal/testutil.MakeBusyboxRootfs makes), tars
# it and imports it as busybox:latest, so lamina has an image with no
# network. Usage: busybox-image.sh [LAMINA] (default: lamina on PATH);
# the store is --root / LAMINA_ROOT as for any lamina command.
set -eu

LAMINA=${1:-lamina}
BUSYBOX=$(command -v busybox || true)
for p in /bin/busybox /usr/bin/busybox; do
	[ -n "$BUSYBOX" ] || { [ -x "$p" ] && BUSYBOX=$p; }
done
if [ -z "$BUSYBOX" ]; then
	echo "busybox-image: busybox-static is not installed (apt-get install busybox-static, or make deps)" >&2
	exit 1
fi
# A dynamically linked busybox would not run inside the image.
if command -v file >/dev/null 2>&1 && file -L "$BUSYBOX" | grep -q 'dynamically linked'; then
	echo "busybox-image: $BUSYBOX is dynamically linked; install busybox-static" >&2
	exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
rootfs=$work/rootfs
for d in bin etc dev proc sys tmp root home var usr/bin; do
	mkdir -p "$rootfs/$d"
done
chmod 1777 "$rootfs/tmp"
cp "$BUSYBOX" "$rootfs/bin/busybox"
chmod 0755 "$rootfs/bin/busybox"
for applet in $("$BUSYBOX" --list); do
	[ "$applet" = busybox ] && continue
	ln -sf busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

# Numeric owner root:root and sorted names: the same busybox package gives
# the same layer (diff ID) every time.
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$work/busybox.tar" .
"$LAMINA" import -c 'CMD ["sh"]' -c 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
	-m "busybox-static from Debian" "$work/busybox.tar" busybox:latest
