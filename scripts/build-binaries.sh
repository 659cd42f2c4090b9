#!/usr/bin/env bash
# Builds the Go-based development binaries from the Go module proxy, once per
# version: kube-apiserver + kubectl (k8s.io/kubernetes), etcd, nats-server, helm;
# with the `node` target also kubelet, kube-controller-manager, kube-scheduler,
# kube-proxy, the CNI plugins, CoreDNS and crictl (docs/node.md).
# Results are cached in ${CHECKOUT_SAGA_CACHE:-~/.cache/checkout-saga}/bin keyed by
# version, so only the first run on a machine builds anything.
#
# usage: scripts/build-binaries.sh [kube|etcd|nats|helm|node ...]   (default: all but node)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../devenv/gotools/versions.env
source "$ROOT/devenv/gotools/versions.env"
CACHE="${CHECKOUT_SAGA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/checkout-saga}"
BIN="$CACHE/bin"
WORK="$CACHE/build"
mkdir -p "$BIN" "$WORK"
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false" GOTOOLCHAIN=local

# One build at a time per cache (a test run and `scripts/up` may start together).
exec 9>"$CACHE/build.lock"
flock 9

log() { printf '[build-binaries] %s\n' "$*" >&2; }
command -v go >/dev/null || { log "Go (>= 1.25) is required to build the binaries"; exit 1; }

have() { [[ -x "$BIN/$1" ]]; }

# Prepare a fresh module directory with the committed sources of devenv/gotools/$1.
prepare_module() {
  local name="$1" modpath="$2"; local dir="$WORK/$name"
  rm -rf "$dir"; mkdir -p "$dir"
  cp "$ROOT/devenv/gotools/$name"/*.go "$dir/"
  (cd "$dir" && go mod init "$modpath" >/dev/null 2>&1)
  echo "$dir"
}

# The k8s.io/kubernetes module, shared by every Kubernetes binary so they compile
# from one Go build cache. Prints "DIR<TAB>LDFLAGS".
kube_module() {
  local v="$KUBE_VERSION"
  local dir; dir="$(prepare_module kube checkout-saga.dev/gotools/kube)"
  local info; info="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$v")"
  local gomod; gomod="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])' <<<"$info")"
  local commit; commit="$(python3 -c 'import json,sys; print(json.load(sys.stdin).get("Origin",{}).get("Hash",""))' <<<"$info")"
  # Upstream's go.mod replaces every staging module with ./staging/src/k8s.io/X; as a
  # dependency those replaces are ignored, so pin each to its published v0.MINOR.PATCH.
  local staging="v0.${v#v1.}"
  {
    printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "$v"
    grep -E '=> \./staging/src/' "$gomod" | awk -v s="$staging" '{print "\t" $1 " => " $1 " " s}'
    printf ')\n'
  } >>"$dir/go.mod"
  (cd "$dir" && go mod tidy >/dev/null)
  local major="${v#v}"; major="${major%%.*}"
  local minor="${v#v*.}"; minor="${minor%%.*}"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  printf '%s\t%s\n' "$dir" "$ld"
}

# Builds the named k8s.io/kubernetes commands that are not cached yet, in one
# `go build` so packages they share compile once.
build_kube_cmds() {
  local v="$KUBE_VERSION" missing=() cmd
  for cmd in "$@"; do have "$cmd-$v" || missing+=("$cmd"); done
  ((${#missing[@]})) || return 0
  log "building ${missing[*]} $v (first run only; several minutes on 2 cores)"
  local mod dir ld; mod="$(kube_module)"; dir="${mod%%$'\t'*}"; ld="${mod#*$'\t'}"
  local pkgs=(); for cmd in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  (cd "$dir" && nice -n 10 go build -trimpath -ldflags "$ld" -o "$dir/out/" "${pkgs[@]}")
  for cmd in "${missing[@]}"; do mv "$dir/out/$cmd" "$BIN/$cmd-$v"; done
}

build_etcd() {
  local v="$ETCD_VERSION"
  have "etcd-$v" && return
  log "building etcd $v (first run only)"
  local dir; dir="$(prepare_module etcd checkout-saga.dev/gotools/etcd)"
  (cd "$dir" && go get "go.etcd.io/etcd/server/v3@$v" >/dev/null 2>&1 && go mod tidy >/dev/null)
  (cd "$dir" && nice -n 10 go build -trimpath -ldflags "-s -w" -o "$BIN/etcd-$v" .)
}

build_simple() {  # name module cmd-package version [extra ldflags]
  local name="$1" module="$2" pkg="$3" v="$4" extra="${5:-}"
  have "$name-$v" && return
  log "building $name $v (first run only)"
  local dir; dir="$(prepare_module "$name" "checkout-saga.dev/gotools/$name")"
  (cd "$dir" && go get "$module@$v" >/dev/null 2>&1 && go mod tidy >/dev/null)
  (cd "$dir" && nice -n 10 go build -trimpath -ldflags "-s -w $extra" -o "$BIN/$name-$v" "$pkg")
}

# CNI plugins: several commands of one module, cached together in a directory that
# containerd's CRI plugin uses as its CNI bin_dir.
build_cni() {
  local v="$CNI_PLUGINS_VERSION" out="$BIN/cni-plugins-$CNI_PLUGINS_VERSION"
  [[ -x "$out/portmap" ]] && return
  log "building CNI plugins $v (first run only)"
  local dir; dir="$(prepare_module cni-plugins checkout-saga.dev/gotools/cni-plugins)"
  (cd "$dir" && go get "github.com/containernetworking/plugins@$v" >/dev/null 2>&1 && go mod tidy >/dev/null)
  local m=github.com/containernetworking/plugins
  (cd "$dir" && nice -n 10 go build -trimpath -ldflags "-s -w -X $m/pkg/utils/buildversion.BuildVersion=$v" \
    -o "$dir/out/" $m/plugins/main/bridge $m/plugins/main/loopback $m/plugins/ipam/host-local $m/plugins/meta/portmap)
  rm -rf "$out.tmp"; mv "$dir/out" "$out.tmp"; rm -rf "$out"; mv "$out.tmp" "$out"
}

# nodebox (devenv/gotools/nodebox): the program inside the node's local images, keyed
# by a hash of its source rather than a version.
build_nodebox() {
  local v; v="$(sha256sum "$ROOT/devenv/gotools/nodebox/main.go" | cut -c1-12)"
  have "nodebox-$v" && return
  log "building nodebox $v"
  local dir; dir="$(prepare_module nodebox checkout-saga.dev/gotools/nodebox)"
  (cd "$dir" && nice -n 10 go build -trimpath -ldflags "-s -w" -o "$BIN/nodebox-$v" .)
}

targets=("$@"); [[ ${#targets[@]} -eq 0 ]] && targets=(kube etcd nats helm)
for t in "${targets[@]}"; do
  case "$t" in
    kube) build_kube_cmds kube-apiserver kubectl ;;
    etcd) build_etcd ;;
    nats) build_simple nats-server github.com/nats-io/nats-server/v2 github.com/nats-io/nats-server/v2 "$NATS_SERVER_VERSION" ;;
    helm) build_simple helm helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
            "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ;;
    # What `saga-devenv up --node` runs besides the control plane (not built by default).
    node)
      build_kube_cmds kubelet kube-controller-manager kube-scheduler kube-proxy
      build_cni
      build_simple coredns github.com/coredns/coredns . "$COREDNS_VERSION" \
        "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
      build_simple crictl sigs.k8s.io/cri-tools sigs.k8s.io/cri-tools/cmd/crictl "$CRICTL_VERSION" \
        "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
      build_nodebox
      ;;
    *) log "unknown target $t"; exit 2 ;;
  esac
done
log "binaries ready in $BIN"
