"""The stretched hard-concrete distribution (Louizos et al. 2018) behind diff pruning's L0 mask.

A mask entry z = min(1, max(0, s·(r − l) + l)) with s = σ(logit(u) + α), u ~ U(0, 1) and
l < 0 < 1 < r: stretching past [0, 1] and clipping puts real probability mass on exactly 0 and 1,
while z stays differentiable in α. That makes the expected number of non-zeros a smooth function
of α, which is what lets an L0 penalty be trained by gradient descent.

Structured masks multiply each entry's z_i by its group's z^g: `group_alpha` broadcasts against
`alpha` (a scalar for one group per tensor, shape (G, 1) against (G, n) for G groups), and a
group mask is drawn once per group, not once per entry.
"""

from __future__ import annotations

import math

import torch

LOW, HIGH = -1.5, 1.5  # the stretch interval (l, r) used by diff pruning
_EPS = 1e-6  # keeps logit(u) finite


def _check(low: float, high: float) -> None:
    if not low < 0.0 < 1.0 < high:
        raise ValueError(f"hard-concrete stretch needs l < 0 < 1 < r, got l={low}, r={high}")


def sample_gate(alpha: torch.Tensor, low: float = LOW, high: float = HIGH) -> torch.Tensor:
    """One draw of z per entry of `alpha` (differentiable in alpha)."""
    _check(low, high)
    u = torch.rand_like(alpha)
    s = torch.sigmoid(torch.logit(u, eps=_EPS) + alpha)
    return (s * (high - low) + low).clamp(0.0, 1.0)


def deterministic_gate(alpha: torch.Tensor, low: float = LOW, high: float = HIGH) -> torch.Tensor:
    """Test-time z: the noise-free s = σ(α), stretched and clipped (Louizos et al. 2018)."""
    _check(low, high)
    return (torch.sigmoid(alpha) * (high - low) + low).clamp(0.0, 1.0)


def prob_nonzero(alpha: torch.Tensor, low: float = LOW, high: float = HIGH) -> torch.Tensor:
    """P(z ≠ 0) = P(ŝ > 0) = σ(α − log(−l/r)), entry by entry."""
    _check(low, high)
    return torch.sigmoid(alpha - math.log(-low / high))


def sample_mask(
    alpha: torch.Tensor,
    group_alpha: torch.Tensor | None = None,
    low: float = LOW,
    high: float = HIGH,
) -> torch.Tensor:
    """z_i, or z_i · z^g when structured; shaped like `alpha`."""
    return _gated(sample_gate, alpha, group_alpha, low, high)


def deterministic_mask(
    alpha: torch.Tensor,
    group_alpha: torch.Tensor | None = None,
    low: float = LOW,
    high: float = HIGH,
) -> torch.Tensor:
    """The test-time mask, plain or structured; shaped like `alpha`."""
    return _gated(deterministic_gate, alpha, group_alpha, low, high)


def _gated(gate, alpha, group_alpha, low, high) -> torch.Tensor:
    z = gate(alpha, low, high)
    return z if group_alpha is None else z * gate(group_alpha, low, high)


def expected_l0(
    alpha: torch.Tensor,
    group_alpha: torch.Tensor | None = None,
    low: float = LOW,
    high: float = HIGH,
) -> torch.Tensor:
    """E[‖z‖₀] in closed form: Σ_i P(z_i ≠ 0), times P(z^g ≠ 0) of i's group when structured.

    z_i and z^g are independent, so the product is non-zero with the product of probabilities.
    """
    p = prob_nonzero(alpha, low, high)
    if group_alpha is not None:
        p = p * prob_nonzero(group_alpha, low, high)
    return p.sum()
