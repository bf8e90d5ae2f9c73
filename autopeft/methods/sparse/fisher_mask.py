"""FISH mask (Sung et al. 2021) and Child-Tuning_D (Xu et al. 2021).

Both score every backbone weight by its empirical Fisher information, keep the global top
fraction fixed, and train only those entries through the sparse-update engine. They differ in
how the Fisher is estimated: FISH from N single examples, Child-Tuning_D from (a sample of) the
training data in mini-batches.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from torch import nn

from autopeft.methods.base import BatchSource, MethodConfig, knob, learning_rate_knob
from autopeft.methods.counting import count_params
from autopeft.methods.sparse import engine
from autopeft.methods.sparse.base import SparseDeltaMethod
from autopeft.methods.sparse.fisher import density_count, empirical_fisher, top_k
from autopeft.methods.targets import is_head_param


@dataclass
class FisherMaskConfig(MethodConfig):
    density: float = knob(0.005, "fraction of backbone weights that may change",
                          minimum=0.0, affects_size=True)
    fisher_samples: int = knob(256, "training examples used to estimate the Fisher", minimum=1)
    learning_rate: float = learning_rate_knob(1e-3)


@dataclass
class ChildTuningDConfig(FisherMaskConfig):
    fisher_samples: int = knob(1024, "training examples used to estimate the Fisher", minimum=1)


class FisherMask(SparseDeltaMethod):
    """Shared implementation; subclasses set the name and how the Fisher is batched."""

    fisher_batch_size = 1

    def planned(self, model: nn.Module) -> int:
        backbone = count_params(model) - sum(
            p.numel() for n, p in model.named_parameters() if is_head_param(n))
        return density_count(self.config.density, backbone)

    def prepare(self, model: nn.Module, data: BatchSource) -> None:
        batches = itertools.islice(
            data.batches(self.fisher_batch_size),
            -(-self.config.fisher_samples // self.fisher_batch_size),
        )
        scores = empirical_fisher(model, batches)
        engine.attach(model, top_k(scores, self.planned(model)))


class Fish(FisherMask):
    name = "fish"
    summary = "FISH mask: train the top-k weights by per-example empirical Fisher"
    config_class = FisherMaskConfig


class ChildTuningD(FisherMask):
    name = "child_tuning_d"
    summary = "Child-Tuning_D: train the child network chosen by Fisher over training data"
    config_class = ChildTuningDConfig
    fisher_batch_size = 16
