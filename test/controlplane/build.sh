#!/usr/bin/env bash
# build.sh builds the test control plane (kube-apiserver and etcd) from the Go
# module proxy and caches the binaries in a per-user directory keyed by
# version. It prints the directory that holds them. A warm cache returns at
# once; a cold build takes about ten minutes on two cores.
#
# k8s.io/kubernetes cannot be built as a plain dependency: its go.mod replaces
# every staging module (k8s.io/api, k8s.io/client-go, ...) with a local path.
# A small wrapper module redirects each of those to the matching v0.x release;
# the list is read from the kubernetes module's own go.mod, downloaded outside
# any module first, so it follows the pinned version.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
STAGING_VERSION="${STAGING_VERSION:-v0.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE_ROOT="${ALUMIINI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/alumiini}"
DEST="$CACHE_ROOT/controlplane/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"

if [[ -x "$DEST/kube-apiserver" && -x "$DEST/etcd" ]]; then
	echo "$DEST"
	exit 0
fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$CACHE_ROOT/controlplane"
staging="$(mktemp -d "$CACHE_ROOT/controlplane/.build-XXXXXX")"
trap 'rm -rf "$work" "$staging"' EXIT

log() { echo "controlplane: $*" >&2; }

build_etcd() {
	log "building etcd $ETCD_VERSION"
	mkdir -p "$work/etcd" && cd "$work/etcd"
	go mod init alumiini.local/etcd-build >/dev/null 2>&1
	go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
	go build -trimpath -ldflags "-s -w" -o "$staging/etcd" go.etcd.io/etcd/server/v3
}

build_kube_apiserver() {
	log "building kube-apiserver $KUBE_VERSION"
	local gomod
	gomod="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
		sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
	[[ -f "$gomod" ]] || { log "could not download k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
	mkdir -p "$work/kube" && cd "$work/kube"
	go mod init alumiini.local/kube-build >/dev/null 2>&1
	local m
	for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod"); do
		go mod edit -replace "$m=$m@$STAGING_VERSION"
	done
	go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" >&2
	local v=k8s.io/component-base/version
	local minor="${KUBE_VERSION#v1.}"
	minor="${minor%%.*}"
	go build -trimpath -o "$staging/kube-apiserver" \
		-ldflags "-s -w -X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor" \
		k8s.io/kubernetes/cmd/kube-apiserver
}

build_etcd
build_kube_apiserver
rm -rf "$DEST"
mv "$staging" "$DEST"
log "cached in $DEST"
echo "$DEST"
