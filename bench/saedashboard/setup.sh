#!/usr/bin/env bash
# Build SAEDashboard's own virtual environment in bench/saedashboard/.venv (git-ignored); skip when already built.
#
#     bash bench/saedashboard/setup.sh          # about 2 minutes, ~2 GB
#     bash bench/saedashboard/setup.sh --force  # rebuild
#
# SAEDashboard requires transformers < 4.57, transformer-lens < 3 and safetensors < 0.5, which the project's own venv
# cannot hold. The pins are in constraints.txt beside this file; a change to it rebuilds the venv on the next call. torchvision and torchaudio come in as dependencies in CUDA builds that break
# the CPU torch on import ("operator torchvision::nms does not exist"), and SAEDashboard runs without them: removed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
marker="$venv/.monoscope-built"
stamp="$(sha256sum "$here/constraints.txt" | cut -d' ' -f1)"
python="${PYTHON:-python3}"

if [[ "${1:-}" != "--force" && -f "$marker" && "$(cat "$marker")" == "$stamp" ]]; then
    echo "SAEDashboard venv already built: $venv"
    exit 0
fi
rm -rf "$venv"  # a half-built or outdated venv is rebuilt from scratch
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --progress-bar off -c "$here/constraints.txt" torch sae-dashboard sae-lens "pyarrow<21"
"${pip[@]}" uninstall -y torchvision torchaudio
"$venv/bin/python" - <<'PY'
import importlib.metadata as md

import torch
from sae_dashboard.sae_vis_runner import SaeVisRunner  # noqa: F401
from sae_lens import SAE  # noqa: F401

for name, want in [("torch", "2.13.0"), ("sae-dashboard", "0.8.0"), ("sae-lens", "6.54.12")]:
    got = md.version(name)
    assert got.split("+")[0] == want, f"{name} {got}, expected {want}"
print("SAEDashboard venv ok: torch", torch.__version__, "sae-dashboard", md.version("sae-dashboard"),
      "sae-lens", md.version("sae-lens"), "transformer-lens", md.version("transformer-lens"))
PY
echo "$stamp" > "$marker"
