#!/usr/bin/env bash
# Sets up everything the VS Code client's tests need, from package registries only (Debian apt, npm,
# PyPI); no browser or binary downloads. Idempotent: steps already done are skipped.
#   1. Debian packages (root only): build-essential pkg-config python3 libkrb5-dev ripgrep chromium
#   2. the extension's npm dependencies (npm ci), then build + package canvas-ls.vsix
#   3. code-server 4.100.3 into editors/vscode/.test-env (native modules rebuilt locally)
#   4. the playwright Python package into the repository's .venv (which `make test` creates)
# Then:  (cd editors/vscode && npm test)                       protocol test (node --test)
#        .venv/bin/python -m pytest tests/editors/vscode -q    end to end in code-server + Chromium
# Environment: VENV (default <repo>/.venv), SKIP_APT=1 (never call apt-get).
# Needs nothing from $HOME: it works with an empty one (npm's cache is refilled from the registry).
set -euo pipefail

EXT_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$EXT_DIR/../.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
TEST_ENV="$EXT_DIR/.test-env"
CODE_SERVER_VERSION=4.100.3
CS_DIR="$TEST_ENV/node_modules/code-server"
CS_STAMP="$TEST_ENV/.code-server-$CODE_SERVER_VERSION.done"
export npm_config_yes=true npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

START=$SECONDS
step() { printf '\n== %s\n' "$*"; }
did() { printf '   %s (%ss)\n' "$*" "$((SECONDS - STEP_START))"; }

# ---- 1. Debian packages ----
step "Debian packages"; STEP_START=$SECONDS
APT_PACKAGES=(build-essential pkg-config python3 libkrb5-dev ripgrep chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  did "already installed: ${APT_PACKAGES[*]}"
elif [ "${SKIP_APT:-0}" = 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "   missing: ${missing[*]} (not root, no apt-get or SKIP_APT=1: install them yourself)"
else
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  did "installed: ${missing[*]}"
fi
command -v node >/dev/null || { echo "node (20.x) is required" >&2; exit 1; }
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
[ "$NODE_MAJOR" = 20 ] || echo "   warning: code-server $CODE_SERVER_VERSION wants node 20, this is $(node --version)"
# Native modules (argon2, VS Code's) are compiled by node-gyp against node's headers, which it would
# otherwise download from nodejs.org into ~/.cache/node-gyp (absent with a new HOME, and the host may be
# unreachable). Node installs ship them as <prefix>/include/node: point node-gyp there, unless a
# nodedir is configured already.
NODE_HEADERS="${npm_config_nodedir:-$(npm config get nodedir 2>/dev/null || true)}"
if [ -z "$NODE_HEADERS" ] || [ "$NODE_HEADERS" = undefined ]; then
  NODE_PREFIX="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
  NODE_H="$NODE_PREFIX/include/node/node_version.h"
  if [ -f "$NODE_H" ] && grep -q "^#define NODE_MAJOR_VERSION $NODE_MAJOR\$" "$NODE_H"; then
    export npm_config_nodedir="$NODE_PREFIX"
    NODE_HEADERS="$NODE_PREFIX"
  else
    NODE_HEADERS="downloaded by node-gyp"
    echo "   warning: no headers for node $(node --version) in $NODE_PREFIX/include/node: node-gyp will download them"
  fi
fi

# ---- 2. the extension ----
step "extension: npm ci, build, package"; STEP_START=$SECONDS
cd "$EXT_DIR"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # --ignore-scripts: esbuild finds its platform binary without its postinstall; nothing else needs one.
  npm ci --ignore-scripts --no-audit --no-fund >/dev/null
  did "npm ci"
else
  did "node_modules up to date"
fi
STEP_START=$SECONDS
newest_src="$(find src package.json tsconfig.json README.md -type f -newer canvas-ls.vsix 2>/dev/null | head -1 || true)"
if [ ! -f canvas-ls.vsix ] || [ -n "$newest_src" ]; then
  npm run --silent package >/dev/null
  did "packaged $EXT_DIR/canvas-ls.vsix"
else
  did "canvas-ls.vsix up to date"
fi

# ---- 3. code-server ----
step "code-server $CODE_SERVER_VERSION in $TEST_ENV"; STEP_START=$SECONDS
if [ -f "$CS_STAMP" ] && [ -f "$CS_DIR/out/node/entry.js" ]; then
  did "already installed"
else
  mkdir -p "$TEST_ENV"
  cd "$TEST_ENV"
  [ -f package.json ] || echo '{"name": "canvas-ls-vscode-test-env", "private": true}' > package.json
  # Its postinstall would fetch nothing we lack, but needs --unsafe-perm as root and rebuilds
  # everything; the same steps by hand:
  npm install --ignore-scripts --no-audit --no-fund "code-server@$CODE_SERVER_VERSION" >/dev/null
  # Built from source: node-pre-gyp would first try to download a prebuilt binary from GitHub. It
  # reads npm_config_build_from_source; npm warns that it does not know it (hence loglevel error).
  npm_config_build_from_source=true npm rebuild argon2 --loglevel=error >/dev/null
  did "npm install code-server, rebuilt argon2 (node headers: $NODE_HEADERS)"
  STEP_START=$SECONDS
  cd "$CS_DIR/lib/vscode"
  npm install --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null
  native=()
  for m in @parcel/watcher @vscode/deviceid @vscode/spdlog kerberos native-watchdog node-pty; do
    [ -d "node_modules/$m" ] && native+=("$m")
  done
  npm rebuild "${native[@]}" >/dev/null
  did "VS Code's node_modules, rebuilt ${native[*]}"
  STEP_START=$SECONDS
  mkdir -p node_modules/@vscode/ripgrep/bin
  cp "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg
  ln -sfn node_modules node_modules.asar
  (cd bin/remote-cli && ln -sfn code-linux.sh code-server)
  (cd bin/helpers && ln -sfn browser-linux.sh browser.sh)
  (cd extensions && npm install --omit=dev --no-audit --no-fund >/dev/null)
  node "$CS_DIR/out/node/entry.js" --version >/dev/null
  touch "$CS_STAMP"
  did "ripgrep from Debian, postinstall links, built-in extensions' dependencies"
fi

# ---- 4. playwright for Python ----
step "playwright (Python) in $VENV"; STEP_START=$SECONDS
if [ ! -x "$VENV/bin/python" ]; then
  make -C "$REPO" "$VENV/.canvas-ls-installed" VENV="$VENV" >/dev/null
  did "created $VENV with canvas-ls (make)"
  STEP_START=$SECONDS
fi
if "$VENV/bin/python" -c "import playwright" 2>/dev/null; then
  did "already installed"
else
  "$VENV/bin/python" -m pip install -q playwright
  did "pip install playwright"
fi

printf '\nready in %ss:\n  code-server  %s\n  chromium     %s\n  extension    %s\n  canvas-ls    %s\n' \
  "$((SECONDS - START))" "$CS_DIR/out/node/entry.js" "$(command -v chromium || echo MISSING)" \
  "$EXT_DIR/canvas-ls.vsix" "$VENV/bin/canvas-ls"
