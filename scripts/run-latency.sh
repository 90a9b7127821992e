#!/bin/bash
# run-latency.sh: container start latency of `lamina run --rm IMG /bin/true`
# against crun, docker and podman on the same busybox rootfs, in one
# hyperfine run (issue 5's benchmark). Needs root and the peers installed
# (apt-get install docker.io podman crun hyperfine); a peer that is not
# there, or does not start, is left out with a note.
# Usage: scripts/run-latency.sh [LAMINA]   (default bin/lamina). Prints a
# Markdown table from hyperfine, then one of the same commands run in
# alternation (scripts/interleave.py, ROUNDS rounds, default 40), which a
# noisy machine disturbs less; scratch under /var/tmp/lamina-latency.
set -u
LAMINA=$(readlink -f "${1:-bin/lamina}")
W=/var/tmp/lamina-latency
# Leave no mount (podman's, a dead run's) and no dockerd behind.
cleanup() {
	[ -n "${dpid:-}" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
	grep " $W/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
}
trap cleanup EXIT
cleanup
rm -rf "$W"; mkdir -p "$W"
export LAMINA_ROOT=$W/store
here=$(cd "$(dirname "$0")" && pwd)

sh "$here/busybox-image.sh" "$LAMINA" >/dev/null || { echo "busybox image failed"; exit 1; }
# The same rootfs as a tar and as an OCI bundle for the peers.
mkdir -p "$W/bundle/rootfs"
D=$("$LAMINA" mount busybox) && cp -a "$D/." "$W/bundle/rootfs/" && "$LAMINA" unmount busybox >/dev/null
tar -C "$W/bundle/rootfs" -cf "$W/busybox.tar" .

cmds=(); names=(); notes=()
cmds+=("$LAMINA run --rm busybox /bin/true"); names+=("lamina run --rm (laminafs)")
cmds+=("$LAMINA run --rm --storage-driver overlay busybox /bin/true"); names+=("lamina run --rm (kernel overlay)")
# crun's bundle (crun spec) has no seccomp profile; lamina loads docker's
# default unless told otherwise. This row is lamina without it.
cmds+=("$LAMINA run --rm --security-opt seccomp=unconfined busybox /bin/true"); names+=("lamina run --rm (laminafs, seccomp=unconfined)")

if command -v crun >/dev/null; then
	# crun 1.8 refuses this hybrid cgroup layout while hugetlb is on v2.
	if [ ! -d /sys/fs/cgroup/hugetlb ]; then
		mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb 2>/dev/null
	fi
	(cd "$W/bundle" && crun spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"\/bin\/true"/' config.json \
		&& python3 - <<'PY'
import json
c=json.load(open("config.json")); c["process"].pop("rlimits",None); c["root"]["path"]="rootfs"
json.dump(c,open("config.json","w"))
PY
	)
	if (cd "$W/bundle" && crun run lat-probe >/dev/null 2>&1); then
		cmds+=("crun --root $W/crun run -b $W/bundle lat"); names+=("crun run")
	else notes+=("crun: could not run the bundle here"); fi
else notes+=("crun: not installed"); fi

if command -v dockerd >/dev/null; then
	dockerd --iptables=false --ip-masq=false --bridge=none -s overlay2 --data-root "$W/docker" -H unix://$W/docker.sock >"$W/dockerd.log" 2>&1 &
	dpid=$!
	for i in $(seq 100); do docker -H unix://$W/docker.sock info >/dev/null 2>&1 && break; sleep 0.2; done
	if docker -H unix://$W/docker.sock import "$W/busybox.tar" latbox >/dev/null 2>&1; then
		cmds+=("docker -H unix://$W/docker.sock run --rm --network none latbox /bin/true"); names+=("docker run --rm")
	else notes+=("docker: dockerd did not start or import failed (see $W/dockerd.log)"); fi
else notes+=("docker: not installed"); fi

if command -v podman >/dev/null; then
	# podman always asks for RLIMIT_NOFILE=1048576 and an RLIMIT_NPROC,
	# which this machine refuses (hard limit 20000; NPROC in a new pid
	# namespace): a wrapper runtime drops process.rlimits, as the
	# baseline measurements did.
	cat >"$W/crun-norlimits" <<'WRAP'
#!/bin/sh
b=""; prev=""
for a in "$@"; do
	[ "$prev" = "--bundle" ] && b=$a
	case $a in --bundle=*) b=${a#--bundle=} ;; esac
	prev=$a
done
if [ -n "$b" ] && [ -f "$b/config.json" ]; then
	python3 -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c["process"].pop("rlimits", None); json.dump(c, open(p, "w"))' "$b/config.json"
fi
exec crun "$@"
WRAP
	chmod +x "$W/crun-norlimits"
	P="podman --root $W/podman --runroot $W/podman-run --cgroup-manager cgroupfs --runtime $W/crun-norlimits"
	if $P import "$W/busybox.tar" latbox >/dev/null 2>&1 && $P run --rm --network none latbox /bin/true >/dev/null 2>&1; then
		cmds+=("$P run --rm --network none latbox /bin/true"); names+=("podman run --rm")
	else notes+=("podman: could not run here ($( $P run --rm --network none latbox /bin/true 2>&1 | tail -1 ))"); fi
else notes+=("podman: not installed"); fi

args=()
for i in "${!cmds[@]}"; do args+=(-n "${names[$i]}" "${cmds[$i]}"); done
hyperfine -N --warmup 3 --runs 20 --export-markdown "$W/table.md" "${args[@]}" >"$W/hyperfine.log" 2>&1
cat "$W/table.md"
# The same commands in alternation, medians: what the docs compare.
pairs=()
ref=""
for i in "${!cmds[@]}"; do
	pairs+=("${names[$i]}" "${cmds[$i]}")
	[ "${names[$i]}" = "crun run" ] && ref="crun run"
done
echo
echo "Interleaved (${ROUNDS:-40} rounds):"
echo
python3 "$here/interleave.py" --rounds "${ROUNDS:-40}" ${ref:+--ref "$ref"} "${pairs[@]}"
for n in "${notes[@]}"; do echo "- $n"; done
