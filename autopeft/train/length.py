"""How long a trial trains when the user does not say: a number of optimizer steps.

One epoch of MRPC is ~100 steps at batch 32, too few for LoRA to converge or for the methods
that schedule phases over the run (diff pruning, AdaLoRA, IncreLoRA, the BitFit warm-ups); a
large data set is learned within one epoch. So the default is the number of epochs that gives
about `TARGET_STEPS` optimizer steps, between 1 and `MAX_EPOCHS`. Measured (MiniLM, MRPC, LoRA
r=8 on q,v, lr 2e-3, pooler trained, one seed): dev 0.805 after 3 epochs (312 steps), 0.821
after 6 (624 steps).
"""

from __future__ import annotations

import math

TARGET_STEPS = 600
MAX_EPOCHS = 10


def default_epochs(train_rows: int, batch_size: int) -> int:
    """Epochs giving about TARGET_STEPS optimizer steps over `train_rows` rows."""
    steps_per_epoch = max(1, math.ceil(train_rows / batch_size))
    return max(1, min(MAX_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch)))
