"""`log_sinkhorn`'s per-group stopping rule (`stop_groups`) and its compile-friendly loop.

The independent references: separate calls on each group (the batch-wide rule on one group is the group's own
rule), POT for converged plans, and `test_sinkhorn.transcription` (spec section 6) for the loop."""

from __future__ import annotations

import pytest
import torch

from otseg_hf.model.sinkhorn import _iterate_compiled, log_sinkhorn
from tests.test_sinkhorn import cosine_cost, pot_plans, transcription

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny problems, one intra-op thread


def grouped_costs(groups=3, per_group=4, m=16, n=4, dtype=torch.float64):
    """Groups whose costs differ in scale, so that they converge after different numbers of iterations."""
    costs = [cosine_cost(per_group, m, n, seed=g, dtype=dtype) * (0.1 + 0.2 * g) for g in range(groups)]
    return torch.cat(costs), costs


def test_groups_stop_after_different_iterations_in_separate_calls():
    """The premise of the tests below: with the batch-wide rule the batch's plan of a group differs from the
    group's own."""
    batch, costs = grouped_costs()
    iterations = [log_sinkhorn(c, 0.05, return_info=True).n_iter for c in costs]
    assert len(set(iterations)) == len(iterations)
    joint = log_sinkhorn(batch, 0.05, return_info=True)
    assert joint.n_iter not in iterations[:-1]
    assert not torch.equal(joint.plan[:4], log_sinkhorn(costs[0], 0.05))


@pytest.mark.parametrize("check_every", [1, 3, 10])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_group_gives_what_it_gives_alone_to_the_bit(check_every, dtype):
    batch, costs = grouped_costs(dtype=dtype)
    result = log_sinkhorn(batch, 0.05, check_every=check_every, stop_groups=3, return_info=True)
    alone = [log_sinkhorn(c, 0.05, return_info=True) for c in costs]
    assert torch.equal(result.plan, torch.cat([a.plan for a in alone]))
    assert torch.equal(result.u, torch.cat([a.u for a in alone]))
    assert torch.equal(result.v, torch.cat([a.v for a in alone]))
    assert result.n_iter == max(a.n_iter for a in alone)
    # and each group's plan is the spec's transcription run on the group alone
    for plan, cost in zip(result.plan.split(4), costs):
        torch.testing.assert_close(plan, transcription(cost, 0.05)[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("grad_mode", ["recompute", "checkpoint", "unrolled"])
def test_gradient_of_each_group_is_its_own_to_the_bit(grad_mode):
    batch, costs = grouped_costs()
    weights = torch.randn(batch.shape, generator=torch.Generator().manual_seed(0), dtype=batch.dtype)
    leaf = batch.clone().requires_grad_(True)
    (log_sinkhorn(leaf, 0.05, grad_mode=grad_mode, stop_groups=3) * weights).sum().backward()
    expected = []
    for cost, w in zip(costs, weights.split(4)):
        alone = cost.clone().requires_grad_(True)
        (log_sinkhorn(alone, 0.05, grad_mode=grad_mode) * w).sum().backward()
        expected.append(alone.grad)
    assert torch.equal(leaf.grad, torch.cat(expected))
    assert leaf.grad.abs().max() > 0


def test_gradcheck_with_groups_stopping_apart():
    batch, _ = grouped_costs(groups=2, per_group=1, m=4, n=3)
    leaf = batch.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: log_sinkhorn(c, 0.1, tol=1e-4, stop_groups=2), (leaf,))


def test_converged_groups_match_pot():
    batch, _ = grouped_costs(groups=2, per_group=2)
    plan = log_sinkhorn(batch, 0.1, max_iter=5000, tol=1e-13, stop_groups=2)
    torch.testing.assert_close(plan, torch.from_numpy(pot_plans(batch, 0.1)), rtol=1e-5, atol=1e-9)


def test_one_group_is_the_batch_wide_rule():
    batch, _ = grouped_costs()
    grouped = log_sinkhorn(batch, 0.05, stop_groups=1, return_info=True)
    plain = log_sinkhorn(batch, 0.05, return_info=True)
    assert grouped.n_iter == plain.n_iter
    assert torch.equal(grouped.plan, plain.plan)


@pytest.mark.parametrize("stop_groups", [0, 2, True, 1.0])
def test_rejects_bad_stop_groups(stop_groups):
    with pytest.raises(ValueError, match="stop_groups must be a positive integer dividing the batch of 3"):
        log_sinkhorn(torch.rand(3, 5, 2), 0.1, stop_groups=stop_groups)


def test_rejects_nan_tol():
    with pytest.raises(ValueError, match="tol must be a number"):
        log_sinkhorn(torch.rand(1, 5, 2), 0.1, tol=float("nan"))


# ------------------------------------------------------------------------------------------------
# the loop torch.compile and torch.export trace
# ------------------------------------------------------------------------------------------------
def _log_marginals(batch):
    m, n = batch.shape[1:]
    return (
        torch.log(torch.full((batch.shape[0], m), 1 / m, dtype=batch.dtype) + 1e-8),
        torch.log(torch.full((batch.shape[0], n), 1 / n, dtype=batch.dtype) + 1e-8),
    )


@pytest.mark.parametrize("stop_groups", [None, 3])
@pytest.mark.parametrize("tol", [1e-6, 0.0])
def test_compiled_loop_gives_the_eager_potentials(stop_groups, tol):
    """The while_loop (run eagerly here) stops where the eager loop stops, per group, and keeps those
    potentials."""
    batch, _ = grouped_costs()
    log_mu, log_nu = _log_marginals(batch)
    u, v, n_iter = _iterate_compiled(batch, log_mu, log_nu, 0.05, 40, tol, stop_groups)
    expected = log_sinkhorn(batch, 0.05, max_iter=40, tol=tol, stop_groups=stop_groups, return_info=True)
    assert int(n_iter) == expected.n_iter
    assert torch.equal(u, expected.u) and torch.equal(v, expected.v)


@pytest.mark.parametrize("stop_groups", [None, 3])
def test_compiles_without_graph_break(stop_groups):
    """fullgraph=True fails on any graph break (a host read such as .item() or nonzero() would be one); the
    "eager" backend checks the tracing without inductor's code generation (slow: benchmarks/compile.py)."""
    batch, _ = grouped_costs(dtype=torch.float32)
    compiled = torch.compile(
        lambda c: log_sinkhorn(c, 0.05, stop_groups=stop_groups, return_info=True),
        fullgraph=True,
        backend="eager",
    )
    result = compiled(batch)
    expected = log_sinkhorn(batch, 0.05, stop_groups=stop_groups, return_info=True)
    assert int(result.n_iter) == expected.n_iter
    torch.testing.assert_close(result.plan, expected.plan, rtol=1e-5, atol=1e-7)
