#!/usr/bin/env bash
# Export the offline images of one Kubernetes version into tarballs (docker-archive format,
# which `ctr images import` reads), plus the CNI manifest, for baking into the node image.
#
#   images/export.sh [--kubernetes-version v1.36.4] [--out images/archives] [--tool skopeo|podman|docker]
#                    [--pod-subnet 10.249.0.0/16] [--dry-run]
#
# The image list is images/<version>.txt (kept in the repository, reviewed) or, without one,
# what `kubeadm config images list --kubernetes-version <version>` prints (kubeadm of that
# minor on PATH), written beside the archives as images-<version>.txt with the CNI's images;
# image_builder/build.sh takes the etcd and pause images of the node image from the same list.
# Needs registry access once, on the Warewulf server (or any machine); nodes need none.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="v1.36.4"  # core/versions.py DEFAULT_KUBERNETES_VERSION
out="${here}/archives"
tool=""
pod_subnet="10.249.0.0/16"
flannel_version="v0.26.3"
dry_run=0

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --kubernetes-version) version="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --tool) tool="$2"; shift 2 ;;
        --pod-subnet) pod_subnet="$2"; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "export.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

case "$version" in
    v1.[0-9]*.[0-9]*) ;;
    *) echo "export.sh: --kubernetes-version must look like v1.36.4" >&2; exit 2 ;;
esac
list="${here}/${version}.txt"
if [ ! -f "$list" ]; then
    list="${out}/images-${version}.txt"
    if [ ! -f "$list" ]; then
        if ! command -v kubeadm >/dev/null 2>&1; then
            echo "export.sh: no image list ${here}/${version}.txt for Kubernetes ${version}, and no kubeadm to ask" >&2
            echo "  write one from: kubeadm config images list --kubernetes-version ${version}" >&2
            exit 2
        fi
        if [ "$dry_run" -eq 1 ]; then  # a dry run writes nothing: the list goes to a temporary file
            list="$(mktemp)"
            trap 'rm -f "$list"' EXIT
        else
            mkdir -p "$out"
        fi
        echo "+ kubeadm config images list --kubernetes-version ${version} > ${list}"
        {
            echo "# Offline images for Kubernetes ${version} with flannel ${flannel_version}: kubeadm's own list"
            echo "# (kubeadm config images list --kubernetes-version ${version}), then the CNI's."
            kubeadm config images list --kubernetes-version "$version"
            echo "docker.io/flannel/flannel:${flannel_version}"
            echo "docker.io/flannel/flannel-cni-plugin:v1.6.0-flannel1"
        } > "${list}.tmp"
        grep -q '/etcd:' "${list}.tmp" || { echo "export.sh: kubeadm listed no etcd image" >&2; exit 1; }
        mv "${list}.tmp" "$list"
    fi
fi
if [ -z "$tool" ]; then
    for candidate in skopeo podman docker; do
        if command -v "$candidate" >/dev/null 2>&1; then tool="$candidate"; break; fi
    done
fi
case "$tool" in
    skopeo|podman|docker) ;;
    "") echo "export.sh: need skopeo, podman or docker" >&2; exit 1 ;;
    *) echo "export.sh: --tool must be skopeo, podman or docker" >&2; exit 2 ;;
esac

run() {
    echo "+ $*"
    if [ "$dry_run" -eq 0 ]; then "$@"; fi
}

run mkdir -p "${out}/manifests"
while read -r ref; do
    case "$ref" in ''|'#'*) continue ;; esac
    name="${ref##*/}"
    archive="${out}/${name/:/_}.tar"
    if [ -s "$archive" ]; then
        echo "have ${archive}"
        continue
    fi
    case "$tool" in
        skopeo) run skopeo copy "docker://${ref}" "docker-archive:${archive}:${ref}" ;;
        *) run "$tool" pull "$ref" && run "$tool" save -o "$archive" "$ref" ;;
    esac
done < "$list"

# The CNI manifest, with flannel's pod network set to the cluster's pod subnet.
manifest="${out}/manifests/cni.yaml"
url="https://github.com/flannel-io/flannel/releases/download/${flannel_version}/kube-flannel.yml"
if [ "$dry_run" -eq 0 ]; then
    curl -fsSL "$url" | sed "s#\"Network\": \"10.244.0.0/16\"#\"Network\": \"${pod_subnet}\"#" > "${manifest}.tmp"
    grep -q "\"Network\": \"${pod_subnet}\"" "${manifest}.tmp" || { echo "export.sh: pod subnet not set in ${url}" >&2; exit 1; }
    mv "${manifest}.tmp" "$manifest"
else
    echo "+ curl -fsSL ${url} > ${manifest} (Network ${pod_subnet})"
fi
echo "done: archives in ${out}; image_builder/build.sh bakes them into the node image"
