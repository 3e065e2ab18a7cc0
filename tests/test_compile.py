"""`torch.compile(model, fullgraph=True)` with the default inductor backend: the eval forward and a training step
(forward with labels, loss, backward) compile without a graph break and give eager's numbers.

`fullgraph=True` makes any graph break an error, and a host read in the traced code (`.item()`, `bool(tensor)`,
`.cpu()`, `.tolist()`, `nonzero()`) is a graph break or, for a data-dependent branch, a tracing error. The
Sinkhorn solver and the mask loss are opaque custom operators under compile (the eager code, called as it is):
the solver reads its stopping test back once every `check_every` iterations, and never with `sinkhorn_tol=0`,
which the profiler counts below.

The independent references: the eager model (itself tested against the spec's transcriptions elsewhere) and,
for the gradient of the loop that `torch.export` traces, autograd through `test_sinkhorn.transcription`, the
spec's loop.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.profiler import profile

from otseg_hf.model import sinkhorn
from otseg_hf.model.sinkhorn import _SinkhornLoopWithGrad, log_sinkhorn
from tests.test_sinkhorn import transcription
from tests.test_sinkhorn_stopping import _log_marginals, grouped_costs

NO_DROPOUT = dict(visual_prompt_dropout=0.0, decoder_dropout=0.0, attention_dropout=0.0)


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny problems, one intra-op thread


# ------------------------------------------------------------------------------------------------
# the differentiable loop (run eagerly here: torch's loop operators also run outside compile)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stop_groups", [None, 3])
@pytest.mark.parametrize("tol", [1e-6, 0.0])
def test_loop_with_gradient_matches_autograd_through_the_transcription(stop_groups, tol):
    """Plan and d plan / d cost of the loop that compiled training uses, against autograd through the spec's
    loop: on the whole batch (the batch-wide rule) or on each group alone (per-group stopping)."""
    batch, groups = grouped_costs()
    weights = torch.randn(batch.shape, generator=torch.Generator().manual_seed(0), dtype=batch.dtype)
    cost = batch.clone().requires_grad_()
    plan, _, _, iterations = _SinkhornLoopWithGrad.apply(cost, *_log_marginals(batch), 0.05, 40, tol, stop_groups)
    (grad,) = torch.autograd.grad((plan * weights).sum(), cost)

    parts = [batch] if stop_groups is None else groups
    expected_plans, expected_grads, counts, start = [], [], [], 0
    for part in parts:
        part = part.clone().requires_grad_()
        part_plan, count = transcription(part, 0.05, max_iter=40, tol=tol if tol > 0 else -1.0)
        w = weights[start : start + part.shape[0]]
        expected_grads.append(torch.autograd.grad((part_plan * w).sum(), part)[0])
        expected_plans.append(part_plan.detach())
        counts.append(count)
        start += part.shape[0]
    if stop_groups is not None and tol > 0:
        assert len(set(counts)) == len(counts)  # the groups stop after different iterations
    assert int(iterations[-1]) == max(counts)
    torch.testing.assert_close(plan, torch.cat(expected_plans), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, torch.cat(expected_grads), rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# the solver under torch.compile: an opaque custom operator
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grad_mode", ["recompute", "checkpoint"])
@pytest.mark.parametrize("stop_groups", [None, 3])
@pytest.mark.parametrize("tol", [1e-6, 0.0])
def test_compiled_solver_gives_the_eager_plan_and_gradient_to_the_bit(tol, stop_groups, grad_mode):
    """The compiled call runs the eager solver and its backward (AOTAutograd traces around them), so plan,
    iteration count and d plan / d cost are eager's exactly, for both stopping rules and both backward
    modes."""
    batch, _ = grouped_costs()
    weights = torch.randn(batch.shape, generator=torch.Generator().manual_seed(0), dtype=batch.dtype)

    def solve(cost):
        return log_sinkhorn(cost, 0.05, max_iter=40, tol=tol, stop_groups=stop_groups, grad_mode=grad_mode,
                            return_info=True)  # fmt: skip

    results = []
    for fn in (solve, torch.compile(solve, fullgraph=True, backend="aot_eager")):
        cost = batch.clone().requires_grad_()
        result = fn(cost)
        results.append((result, torch.autograd.grad((result.plan * weights).sum(), cost)[0]))
    (eager, eager_grad), (compiled, compiled_grad) = results
    assert int(compiled.n_iter) == eager.n_iter
    assert torch.equal(compiled.plan, eager.plan) and torch.equal(compiled_grad, eager_grad)


HOST_READS = ("aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::nonzero")


def _host_reads(fn, *args) -> int:
    """How many times a call reads a tensor's values back to the host (every `int()`, `bool()`, `.item()` of a
    tensor goes through `aten::_local_scalar_dense`; `nonzero` has a data-dependent size), by the profiler."""
    with profile() as prof:
        fn(*args)
    return sum(event.name in HOST_READS for event in prof.events())


def test_compiled_solver_reads_nothing_back_with_a_fixed_iteration_count():
    """With `tol=0` a compiled Sinkhorn call (inductor) makes no host read; with the stopping rule it reads
    its test once every `check_every` iterations (the counter sees those: the check can fail)."""
    cost = grouped_costs(dtype=torch.float32)[0]
    reads = {}
    for tol in (1e-6, 0.0):
        compiled = torch.compile(
            lambda c, tol=tol: log_sinkhorn(c, 0.05, max_iter=60, tol=tol, stop_groups=3), fullgraph=True
        )
        expected = log_sinkhorn(cost, 0.05, max_iter=60, tol=tol, stop_groups=3)
        torch.testing.assert_close(compiled(cost), expected)
        reads[tol] = _host_reads(compiled, cost)
    assert reads[0.0] == 0
    assert reads[1e-6] >= 60 // 10  # one read (and the nonzero of each group) per window of check_every = 10


def test_copies_of_the_module_register_their_own_operators():
    """A Hub folder's remote code is another copy of sinkhorn.py under another module name: importing it
    beside the package's, or executing it again, registers operators of their own names instead of failing on
    a duplicate."""
    copies = []
    for _ in range(2):  # the second: the same module executed again (transformers does when its file changed)
        # in a package, as a Hub folder's copy is (its relative import of sinkhorn_iterations resolves there)
        spec = importlib.util.spec_from_file_location("otseg_hf.model.hub_copy_of_sinkhorn", Path(sinkhorn.__file__))
        copies.append(importlib.util.module_from_spec(spec))
        spec.loader.exec_module(copies[-1])
    names = {module._opaque_solve._qualname for module in (sinkhorn, *copies)}
    assert len(names) == 3
    copy = copies[-1]
    cost = grouped_costs(dtype=torch.float32)[0]
    plan, *_ = copy._opaque_solve(cost, *_log_marginals(cost), 0.05, 40, 1e-6, 10, 1, 0, False)
    torch.testing.assert_close(plan, log_sinkhorn(cost, 0.05, max_iter=40), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------
def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_compiled_eval_forward_and_training_step_match_eager(make_model):
    """One tiny inductive model: the compiled eval forward's logits and the compiled training step's loss and
    gradients (of every trainable parameter) within 1e-4 of eager's, with the default stopping rule."""
    model = make_model(num_decoder_layers=2, **NO_DROPOUT)
    compiled = torch.compile(model, fullgraph=True)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 5, (2, 32, 32), generator=generator)
    labels[:, :4] = 255

    with torch.no_grad():
        eager = model(pixel_values)
        result = compiled(pixel_values)
    for name in ("logits", "decoder_logits", "score_logits"):
        torch.testing.assert_close(result[name], eager[name], rtol=1e-4, atol=1e-4)
    assert torch.equal(result.logits.argmax(1), eager.logits.argmax(1))

    model.train()
    eager_loss = model(pixel_values, labels=labels).loss
    eager_loss.backward()
    eager_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    loss = compiled(pixel_values, labels=labels).loss
    loss.backward()
    grads = _grads(model)
    assert sorted(grads) == sorted(eager_grads) and any(name.startswith("head.") for name in grads)
    assert any(name.startswith("visual_prompts.") for name in grads)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-4, atol=1e-4)
    scale = max(g.abs().max() for g in eager_grads.values())
    assert scale > 0
    for name, grad in grads.items():
        torch.testing.assert_close(
            grad, eager_grads[name], rtol=1e-4, atol=1e-4 * scale, msg=lambda m, name=name: f"{name}: {m}"
        )

    # the label check runs inside the compiled program (same graph: no recompilation), before the loss
    bad = labels.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(RuntimeError, match="outside the 5 classes"):
        compiled(pixel_values, labels=bad)
    with pytest.raises(ValueError, match=r"label ids \[7\]"):
        model(pixel_values, labels=bad)


def test_compiled_eval_forward_with_a_fixed_iteration_count_reads_nothing_back(make_model):
    """`sinkhorn_tol=0` (the opt-in fixed iteration count): the whole compiled eval forward makes no host read
    (no synchronisation with a GPU), and gives eager's logits."""
    model = make_model(num_decoder_layers=2, sinkhorn_tol=0.0, sinkhorn_max_iter=30)
    compiled = torch.compile(model, fullgraph=True)
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = compiled(pixel_values).logits
        expected = model(pixel_values).logits  # (the first eager call must not make compiled recompile:
        assert _host_reads(compiled, pixel_values) == 0  # a recompilation would count its tracing's reads)
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
