"""An optimizer rebuilt mid-run continues the run's lr schedule and keeps surviving AdamW state;
IncreLoRA's new rank components warm up.

Learning rates are read off the optimizer at every `step()` (a recording AdamW patched into the
loop) and compared with transformers' own linear schedule over the whole run.
"""

from __future__ import annotations

import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from autopeft.backbones.models import load_model, load_tokenizer, resolve_model
from autopeft.methods import build_method
from autopeft.methods.base import Method, MethodConfig, freeze, unfreeze_head
from autopeft.methods.lora_family import increlora
from autopeft.methods.lora_family.dylora import lora_weights
from autopeft.tasks import get_task, load_task_data
from autopeft.train.data import tokenize_frame
from autopeft.train.loop import LoopSettings, fit, linear_schedule

LR = 1e-2


class RecordingAdamW(torch.optim.AdamW):
    """AdamW that notes, at each step, its groups' lrs, its state and its parameters."""

    made: list[RecordingAdamW] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lrs: list[list[float]] = []  # per step, per group
        self.states: list[dict] = []  # per step: parameter id → (step, exp_avg) before it
        self.last: dict = {}
        self.before: list[dict] = []  # per step: parameter id → value before / after it
        self.after: list[dict] = []
        RecordingAdamW.made.append(self)

    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"]]
        self.lrs.append([g["lr"] for g in self.param_groups])
        self.states.append(self.moments())
        self.before.append({id(p): p.detach().clone() for p in params})
        loss = super().step(closure)
        self.after.append({id(p): p.detach().clone() for p in params})
        self.last = self.moments()  # as the optimizer leaves it
        return loss

    def moments(self) -> dict:
        return {id(p): (float(s["step"]), s["exp_avg"].clone()) for p, s in self.state.items()}


@pytest.fixture
def recording(monkeypatch):
    RecordingAdamW.made = []
    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    return RecordingAdamW.made


def reference_lrs(warmup: int, total: int) -> list[float]:
    """The lr multiplier each of the run's steps uses, from transformers' schedule."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def train(tiny_bert, mrpc_dir, method: Method, rows: int, warmup_ratio: float):
    task = get_task("mrpc")
    source = resolve_model(str(tiny_bert))
    tokenizer = load_tokenizer(source)
    frame = load_task_data(task, mrpc_dir).train.head(rows)
    split = tokenize_frame(frame, task.text_columns, tokenizer)
    model = method.apply(load_model(source, num_labels=2, seed=3))
    settings = LoopSettings(epochs=1, batch_size=4, learning_rate=LR, warmup_ratio=warmup_ratio)
    fit(model, method, split, None, tokenizer, task, settings)
    return model


def assert_lrs_follow_the_schedule(made: list[RecordingAdamW], warmup: int, total: int):
    """Every group of every optimizer is at its base lr × the run's multiplier at that step."""
    expected = iter(reference_lrs(warmup, total))
    for optimizer in made:
        bases = [g["initial_lr"] for g in optimizer.param_groups]
        for lrs in optimizer.lrs:
            factor = next(expected)
            assert lrs == pytest.approx([b * factor for b in bases], rel=1e-9, abs=1e-12)
    assert next(expected, None) is None  # every step was recorded


@pytest.mark.parametrize(("warmup", "total"), [(0, 1), (0, 7), (3, 10), (10, 10), (4, 4)])
def test_linear_schedule_is_transformers(warmup, total):
    assert [linear_schedule(warmup, total)(s) for s in range(total)] == pytest.approx(
        reference_lrs(warmup, total), rel=1e-12)


class Unfreezing(Method):
    """Trains the head; after each step in `at` also one more LayerNorm bias (a rebuild)."""

    name = "unfreezing"
    summary = "test method"
    config_class = MethodConfig

    def __init__(self, at: tuple[int, ...]):
        super().__init__(MethodConfig())
        self.at = at
        self.added: list[torch.nn.Parameter] = []

    def apply(self, model):
        freeze(model)
        unfreeze_head(model)
        return model

    def after_step(self, model, step):
        if step not in self.at:
            return False
        param = next(p for n, p in model.named_parameters()
                     if n.endswith("LayerNorm.bias") and not p.requires_grad)
        param.requires_grad_(True)
        self.added.append(param)
        return True


def test_rebuilds_continue_the_schedule_and_keep_adam_state(tiny_bert, mrpc_dir, recording):
    method = Unfreezing(at=(2, 6))  # one rebuild inside the warmup, one in the decay
    model = train(tiny_bert, mrpc_dir, method, rows=40, warmup_ratio=0.3)  # 10 steps, 3 warmup
    assert [len(o.lrs) for o in recording] == [2, 4, 4]
    assert_lrs_follow_the_schedule(recording, warmup=3, total=10)

    head = model.classifier.weight
    for optimizer, done in zip(recording[1:], (2, 6), strict=True):
        steps, exp_avg = optimizer.states[0][id(head)]  # before the new optimizer's first step
        assert steps == done  # not restarted
        previous = recording[recording.index(optimizer) - 1]
        torch.testing.assert_close(exp_avg, previous.last[id(head)][1], rtol=0, atol=0)
    first, second = method.added
    assert id(first) not in recording[1].states[0]  # a new tensor starts fresh ...
    assert recording[2].states[0][id(first)][0] == 4  # ... and keeps its state at the next one
    assert id(second) not in recording[2].states[0]


def test_diff_pruning_switch_continues_the_schedule(tiny_bert, mrpc_dir, recording):
    method = build_method("diff_pruning", {"density": 0.002, "learning_rate": LR,
                                           "l0_fraction": 0.5})
    model = train(tiny_bert, mrpc_dir, method, rows=32, warmup_ratio=0.25)  # 8 steps, 2 warmup
    assert [len(o.lrs) for o in recording] == [4, 4]
    assert len(recording[0].param_groups[-1]["params"]) and \
        recording[0].param_groups[-1]["initial_lr"] == method.config.alpha_lr
    assert_lrs_follow_the_schedule(recording, warmup=2, total=8)
    assert recording[1].lrs[0][0] == pytest.approx(LR * 4 / 6)  # not back at the peak
    assert recording[1].states[0][id(model.classifier.weight)][0] == 4


def test_increlora_new_components_warm_up(tiny_bert, mrpc_dir, recording):
    method = build_method("increlora", {"rank_budget": 2, "init_r": 1, "r_cap": 4, "interval": 2,
                                        "add_per_step": 1, "targets": "qv", "learning_rate": LR})
    grown: list[tuple[int, str, int]] = []  # (after step, matrix, component)
    original = method.grow

    def grow(model, count):
        chosen = original(model, count)
        steps = sum(len(o.lrs) for o in recording)
        grown.extend((steps, name, method.active_ranks()[name] - 1) for name in chosen)
        return chosen

    method.grow = grow
    model = train(tiny_bert, mrpc_dir, method, rows=64, warmup_ratio=0.1)  # 16 steps, 2 warmup
    (optimizer,) = recording
    assert_lrs_follow_the_schedule(recording, warmup=2, total=16)
    assert [g[0] for g in grown] == [2, 4, 6, 8]

    def scale(weight: torch.Tensor, column: int, step: int) -> float:
        """The update the component got at `step` (1-based), over the one AdamW made."""
        start = optimizer.before[step - 1][id(weight)][:, column]
        made = optimizer.after[step - 1][id(weight)][:, column] - start
        kept = (weight.detach() if step == len(optimizer.before)
                else optimizer.before[step][id(weight)])[:, column] - start
        assert made.abs().max() > 0
        return float((kept * made).sum() / (made * made).sum())

    warmup = increlora.NEW_RANK_WARMUP
    layers = method.layers(model)
    for at, name, k in grown:
        _, weight_b = lora_weights(layers[name])
        ramp = [scale(weight_b, k, at + j) for j in range(1, min(warmup + 2, 17 - at))]
        expected = [min(j, warmup) / warmup for j in range(1, len(ramp) + 1)]
        assert ramp == pytest.approx(expected, rel=1e-3), name
        assert ramp[0] < 1.0
        assert scale(weight_b, 0, at + 1) == pytest.approx(1.0, rel=1e-3)  # old ones: full lr
