#!/usr/bin/env bash
# Build the ek8s node images with podman or docker, import them into Warewulf and build them
# there: `wwctl image import --build` on Warewulf 4.6+, `wwctl container import --build` on 4.5
# (from `wwctl version`). Needs Python 3.11 (python3.11, or EK8S_PYTHON) for pyproject.toml.
#
#   image_builder/build.sh [--kubernetes-version v1.36.4] [--variants "base control"]
#                          [--k3s-version v1.36.4+k3s1] [--runtime podman|docker]
#                          [--no-import] [--dry-run]
#
# Variants: base (kubeadm workers), control (base + HAProxy, keepalived), k3s (both roles of
# a k3s cluster; its release defaults to the Kubernetes version's first, <version>+k3s1).
# Images are named ek8s-<variant> in Warewulf, as the inventory expects (ek8s-control and
# ek8s-base for kubeadm, ek8s-k3s for k3s). Run images/export.sh first so the offline images
# are baked in (kubeadm; the k3s image carries k3s's own airgap images). The base image's etcd
# tools and sandbox image come from the version's image list (images/<version>.txt, or the
# images-<version>.txt export.sh wrote beside the archives): the etcd and pause lines.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
version="v1.36.4"  # core/versions.py DEFAULT_KUBERNETES_VERSION
variants="base control"
k3s_version=""
runtime=""
do_import=1
dry_run=0
workdir="${TMPDIR:-/tmp}"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --kubernetes-version) version="$2"; shift 2 ;;
        --variants) variants="$2"; shift 2 ;;
        --k3s-version) k3s_version="$2"; shift 2 ;;
        --runtime) runtime="$2"; shift 2 ;;
        --no-import) do_import=0; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

case "$version" in
    v1.[0-9]*.[0-9]*) ;;
    *) echo "build.sh: --kubernetes-version must look like v1.36.4" >&2; exit 2 ;;
esac
k3s_version="${k3s_version:-${version}+k3s1}"
case "$k3s_version" in
    v1.[0-9]*.[0-9]*+k3s[0-9]*) ;;
    *) echo "build.sh: --k3s-version must look like v1.36.4+k3s1 (a k3s release)" >&2; exit 2 ;;
esac
for v in $variants; do
    case "$v" in
        base|control|k3s) ;;
        *) echo "build.sh: unknown variant '$v' (base, control, k3s)" >&2; exit 2 ;;
    esac
done
case " $variants " in
    *" control "*) case " $variants " in *" base "*) ;; *) variants="base $variants" ;; esac ;;
esac
if [ -z "$runtime" ]; then
    for candidate in podman docker; do
        if command -v "$candidate" >/dev/null 2>&1; then runtime="$candidate"; break; fi
    done
fi
case "$runtime" in
    podman|docker) ;;
    "") echo "build.sh: need podman or docker" >&2; exit 1 ;;
    *) echo "build.sh: --runtime must be podman or docker" >&2; exit 2 ;;
esac

run() {
    echo "+ $*"
    if [ "$dry_run" -eq 0 ]; then "$@"; fi
}

# Warewulf 4.5 calls node images "containers"; 4.6 renamed them "images".
import_verb=""
if [ "$do_import" -eq 1 ]; then
    if ! ww_version="$(wwctl version 2>/dev/null)"; then
        echo "build.sh: wwctl not found or failing; use --no-import to only build" >&2
        exit 1
    fi
    case "$ww_version" in
        *4.5.*) import_verb="container" ;;
        *4.[6-9].*|*4.1[0-9].*) import_verb="image" ;;
        *) echo "build.sh: unsupported Warewulf version: ${ww_version}" >&2; exit 1 ;;
    esac
fi

# ek8s's dependencies for the image, from pyproject.toml (the code itself is in the overlay),
# read with tomllib: Python 3.11 or later, the python3.11 the README installs (Rocky 9's
# python3 is 3.9). The check runs under whatever it finds, so it is kept to Python 2/3 syntax.
python="${EK8S_PYTHON:-}"
if [ -z "$python" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
    done
fi
if [ -z "$python" ] || ! command -v "$python" >/dev/null 2>&1; then
    echo "build.sh: python3.11 not found (dnf install python3.11, or set EK8S_PYTHON)" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    found="$("$python" -c 'import sys; print("%d.%d" % tuple(sys.version_info[:2]))' 2>/dev/null || echo unknown)"
    echo "build.sh: ${python} is Python ${found}; 3.11 or later is needed (dnf install python3.11, or set EK8S_PYTHON)" >&2
    exit 1
fi
"$python" - "$repo/pyproject.toml" > "$repo/image_builder/requirements-node.txt" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
if [ ! -d "$repo/images/archives" ]; then
    echo "build.sh: note: images/archives is missing; nodes will pull images (run images/export.sh)" >&2
    run mkdir -p "$repo/images/archives"
fi

# The etcd and pause images of the version, for the base image (kubeadm's variants).
etcd_image="" pause_image=""
case " $variants " in
    *" base "*)
        list=""
        for candidate in "$repo/images/${version}.txt" "$repo/images/archives/images-${version}.txt"; do
            if [ -f "$candidate" ]; then list="$candidate"; break; fi
        done
        if [ -z "$list" ]; then
            echo "build.sh: no image list for Kubernetes ${version} (images/${version}.txt): run" >&2
            echo "  images/export.sh --kubernetes-version ${version} first; the node's etcd tools come from its etcd image" >&2
            exit 2
        fi
        etcd_image="$(grep -m1 -E '^[^#]*/etcd:' "$list" || true)"
        pause_image="$(grep -m1 -E '^[^#]*/pause:' "$list" || true)"
        if [ -z "$etcd_image" ] || [ -z "$pause_image" ]; then
            echo "build.sh: ${list} names no etcd or no pause image" >&2
            exit 2
        fi
        ;;
esac

for v in $variants; do
    tag="localhost/ek8s-${v}:${version}"
    base="ghcr.io/warewulf/warewulf-rockylinux:9"
    if [ "$v" = control ]; then base="localhost/ek8s-base:${version}"; fi
    build_args=(--build-arg "KUBERNETES_VERSION=${version}" --build-arg "BASE_IMAGE=${base}")
    if [ "$v" = k3s ]; then build_args+=(--build-arg "K3S_VERSION=${k3s_version}"); fi
    if [ "$v" = base ]; then build_args+=(--build-arg "ETCD_IMAGE=${etcd_image}" --build-arg "PAUSE_IMAGE=${pause_image}"); fi
    run "$runtime" build -f "$repo/image_builder/Containerfile.${v}" "${build_args[@]}" -t "$tag" "$repo"
    if [ "$do_import" -eq 1 ]; then
        archive="${workdir}/ek8s-${v}-${version}.tar"
        run "$runtime" save -o "$archive" "$tag"
        # --build: Warewulf builds an imported image only when asked (4.5.8
        # internal/pkg/api/container/container.go:243, 4.6.5 internal/pkg/api/image/image.go:175;
        # the flag defaults to false); nodes get a 404 for an unbuilt one.
        run wwctl "$import_verb" import --force --build "$archive" "ek8s-${v}"
        run rm -f "$archive"
    fi
done
echo "done: ${variants} (Kubernetes ${version}); next: ek8s warewulf apply (docs/warewulf.md)"
