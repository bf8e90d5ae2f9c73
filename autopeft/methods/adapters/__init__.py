"""Bottleneck adapters (Houlsby et al. 2019, Pfeiffer et al. 2021, He et al. 2022), native.

AdapterHub's `adapters` package cannot be installed beside transformers 5, so the three
placements share one small implementation here: `modules` (the bottleneck and the wrapper that
adds it to a projection's output), `placement` (where adapters go, by role) and `method` (the
registered methods and their knobs).
"""

from autopeft.methods.adapters.method import (
    AdapterConfig,
    BottleneckAdapter,
    HoulsbyAdapter,
    ParallelAdapter,
    ParallelAdapterConfig,
    PfeifferAdapter,
)

__all__ = [
    "AdapterConfig",
    "BottleneckAdapter",
    "HoulsbyAdapter",
    "ParallelAdapter",
    "ParallelAdapterConfig",
    "PfeifferAdapter",
]
