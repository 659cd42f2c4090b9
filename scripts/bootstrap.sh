#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, idempotently:
# Debian packages (PostgreSQL, Redis), the Python virtualenv with the project and
# its dev tools, and the Go-built binaries (kube-apiserver, kubectl, etcd,
# nats-server, helm; cached under ~/.cache/checkout-saga). A second run is fast.
# With --node also what the local node needs (docs/node.md): containerd, runc and
# iptables from Debian, kubelet and the other node binaries from Go modules.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[bootstrap] %s\n' "$*" >&2; }

node=""
for arg in "$@"; do
  case "$arg" in
    --node) node=1 ;;
    *) log "unknown argument $arg (usage: scripts/bootstrap.sh [--node])"; exit 2 ;;
  esac
done

PY="${PYTHON:-python3}"
need_apt=()
"$PY" -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [[ -n "$node" ]]; then
  command -v containerd >/dev/null 2>&1 || need_apt+=(containerd)
  command -v runc >/dev/null 2>&1 || need_apt+=(runc)
  command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
fi
if ((${#need_apt[@]})); then
  log "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # policy-rc.d keeps the packages from starting their own system services:
  # the project runs its own instances on its own ports. An existing one is kept.
  own_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  [[ -z "$own_policy" ]] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

VENV="$ROOT/.venv"
# requirements.lock (scripts/lock) pins every package: a new machine installs what was tested.
stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/requirements.lock" | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  log "creating the Python virtualenv in .venv"
  # A venv whose creation failed half-way has a python but no pip: start over.
  [[ -x "$VENV/bin/pip" ]] || { rm -rf "$VENV"; "$PY" -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -c "$ROOT/requirements.lock" -e "$ROOT[dev]"
  rm -f "$VENV"/.installed-*; touch "$stamp"
fi
# Put the source roots on sys.path, so a package added under operator/, services/,
# devenv/ or gen/python is importable without reinstalling.
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n' "$ROOT/operator" "$ROOT/services" "$ROOT/devenv" "$ROOT/gen/python" >"$site/checkout-saga-src.pth"

"$ROOT/scripts/build-binaries.sh"
[[ -z "$node" ]] || "$ROOT/scripts/build-binaries.sh" node
