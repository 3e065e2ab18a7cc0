"""Tests of `otseg_hf.model.sinkhorn.log_sinkhorn` against POT and a literal transcription of spec section 6."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otseg_hf.model.sinkhorn import log_sinkhorn

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny problems, one intra-op thread


def transcription(cost, epsilon, source_marginal=None, target_marginal=None, max_iter=100, tol=1e-6):
    """Spec section 6, as the reference runs it: a python loop with a host sync every iteration.

    Returns the plan and the number of iterations run (the converged one included).
    """
    batch, m, n = cost.shape
    mu = torch.full((batch, m), 1.0 / m, dtype=cost.dtype) if source_marginal is None else source_marginal
    nu = torch.full((batch, n), 1.0 / n, dtype=cost.dtype) if target_marginal is None else target_marginal
    u = torch.zeros(batch, m, dtype=cost.dtype)
    v = torch.zeros(batch, n, dtype=cost.dtype)
    iterations = 0
    for _ in range(max_iter):
        u_prev = u
        u = u + epsilon * (
            torch.log(mu + 1e-8) - torch.logsumexp((u[:, :, None] + v[:, None, :] - cost) / epsilon, dim=2)
        )
        v = v + epsilon * (
            torch.log(nu + 1e-8) - torch.logsumexp((u[:, :, None] + v[:, None, :] - cost) / epsilon, dim=1)
        )
        iterations += 1
        if (u - u_prev).abs().mean().item() < tol:
            break
    return torch.exp((u[:, :, None] + v[:, None, :] - cost) / epsilon), iterations


def cosine_cost(batch, m, n, seed, dim=8, dtype=torch.float32):
    """1 - cosine similarity of random unit vectors, as the model builds it: values in [0, 2]."""
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.nn.functional.normalize(
        torch.randn(batch, m, dim, generator=gen, dtype=torch.float64), dim=-1
    )
    prompts = torch.nn.functional.normalize(
        torch.randn(batch, n, dim, generator=gen, dtype=torch.float64), dim=-1
    )
    return (1 - pixels @ prompts.transpose(1, 2)).to(dtype)


def random_marginal(*shape, seed):
    gen = torch.Generator().manual_seed(seed)
    weights = torch.rand(*shape, generator=gen, dtype=torch.float64) + 0.2
    return weights / weights.sum(-1, keepdim=True)


def pot_plans(cost, epsilon, source=None, target=None):
    """POT's log-domain Sinkhorn, one problem per batch element, run to convergence. (B, M, N) numpy."""
    batch, m, n = cost.shape
    plans = []
    for b in range(batch):
        a = np.full(m, 1.0 / m) if source is None else source[b].numpy()
        c = np.full(n, 1.0 / n) if target is None else target[b].numpy()
        plan, log = ot.sinkhorn(
            a, c, cost[b].numpy(), epsilon, method="sinkhorn_log", numItermax=100_000, stopThr=1e-13, log=True
        )
        assert log["err"][-1] < 1e-12  # POT itself converged
        plans.append(plan)
    return np.stack(plans)


# ------------------------------------------------------------------------------------------------
# agreement with POT (float64, converged)
# ------------------------------------------------------------------------------------------------
# The log(mu + 1e-8) quirk makes the problem very slightly unbalanced (row mass 1 + M e-8, column
# mass 1 + N e-8), so u drifts by ~eps (M - N) 1e-8 per iteration forever and a tight tol is never
# reached: we run a fixed, ample number of iterations (tol=0). The quirk moves plan entries by a
# relative ~N e-8, far below the tolerance.
@pytest.mark.parametrize("shape", [(1, 5, 3), (3, 17, 4), (2, 64, 8)])
@pytest.mark.parametrize("epsilon", [0.05, 0.1, 0.5])
def test_matches_pot_uniform(shape, epsilon):
    cost = 2 * torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.float64)
    plan = log_sinkhorn(cost, epsilon, max_iter=1000, tol=0.0)
    assert plan.dtype == torch.float64
    expected = pot_plans(cost, epsilon)
    np.testing.assert_allclose(plan.numpy(), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("epsilon", [0.05, 0.5])
def test_matches_pot_non_uniform_marginals(epsilon):
    cost = cosine_cost(2, 12, 5, seed=3, dtype=torch.float64)
    source, target = random_marginal(2, 12, seed=1), random_marginal(2, 5, seed=2)
    plan = log_sinkhorn(cost, epsilon, max_iter=2000, tol=0.0, source_marginal=source, target_marginal=target)
    np.testing.assert_allclose(plan.numpy(), pot_plans(cost, epsilon, source, target), rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# marginals
# ------------------------------------------------------------------------------------------------
def test_uniform_marginals_hold():
    cost = cosine_cost(3, 20, 6, seed=0, dtype=torch.float64)
    plan = log_sinkhorn(cost, 0.05, max_iter=1000, tol=0.0)
    torch.testing.assert_close(
        plan.sum(2), torch.full((3, 20), 1 / 20, dtype=torch.float64), rtol=1e-6, atol=1e-9
    )
    torch.testing.assert_close(
        plan.sum(1), torch.full((3, 6), 1 / 6, dtype=torch.float64), rtol=1e-6, atol=1e-9
    )
    assert (plan >= 0).all()


def test_non_uniform_marginals_hold_batched_and_1d():
    cost = cosine_cost(3, 10, 4, seed=1, dtype=torch.float64)
    # batched (B, M) / (B, N): a different marginal per problem
    source, target = random_marginal(3, 10, seed=5), random_marginal(3, 4, seed=6)
    plan = log_sinkhorn(cost, 0.1, max_iter=1000, tol=0.0, source_marginal=source, target_marginal=target)
    torch.testing.assert_close(plan.sum(2), source, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(plan.sum(1), target, rtol=1e-6, atol=1e-9)
    # 1-D (M,) / (N,): the same marginal for every problem, same as repeating it in batched form
    plan_1d = log_sinkhorn(
        cost, 0.1, max_iter=1000, tol=0.0, source_marginal=source[0], target_marginal=target[0]
    )
    torch.testing.assert_close(plan_1d.sum(2), source[0].expand(3, -1), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(plan_1d.sum(1), target[0].expand(3, -1), rtol=1e-6, atol=1e-9)
    plan_repeated = log_sinkhorn(
        cost,
        0.1,
        max_iter=1000,
        tol=0.0,
        source_marginal=source[0].expand(3, -1),
        target_marginal=target[0].expand(3, -1),
    )
    torch.testing.assert_close(plan_1d, plan_repeated, rtol=1e-12, atol=0)


def test_zero_marginal_entry_uses_log_offset():
    """The reference's log(mu + 1e-8): a zero marginal entry gives a row of mass ~1e-8, not NaN or 0."""
    cost = cosine_cost(1, 6, 3, seed=2, dtype=torch.float64)
    source = torch.tensor([0.0, 0.2, 0.2, 0.2, 0.2, 0.2], dtype=torch.float64)
    plan = log_sinkhorn(cost, 0.1, max_iter=500, tol=0.0, source_marginal=source)
    assert torch.isfinite(plan).all()
    expected, _ = transcription(cost, 0.1, source_marginal=source.expand(1, -1), max_iter=500, tol=0.0)
    torch.testing.assert_close(plan, expected, rtol=1e-10, atol=0)
    assert 0.5e-8 < plan[0, 0].sum().item() < 2e-8


# ------------------------------------------------------------------------------------------------
# the reference's numerics: literal transcription, stopping iteration, check_every
# ------------------------------------------------------------------------------------------------
TRANSCRIPTION_CASES = [
    # (batch, M, N, epsilon, seed, cost scale); the reference stops at the iteration in the comment
    (2, 16, 4, 0.05, 0, 1.0),  # 54
    (2, 16, 4, 0.1, 1, 1.0),  # 67
    (3, 30, 6, 0.05, 1, 1.0),  # 72
    (1, 64, 8, 0.05, 1, 1.0),  # 45
    (1, 64, 8, 0.5, 0, 1.0),  # 8: inside the first check window
    (2, 16, 4, 0.5, 1, 1.0),  # 10: on a window boundary
    (2, 16, 4, 0.05, 0, 4.0),  # does not converge: runs all 100 iterations
]


@pytest.mark.parametrize("batch,m,n,epsilon,seed,scale", TRANSCRIPTION_CASES)
def test_matches_literal_transcription_float32(batch, m, n, epsilon, seed, scale):
    cost = scale * cosine_cost(batch, m, n, seed)
    expected, expected_iter = transcription(cost, epsilon)
    result = log_sinkhorn(cost, epsilon, return_info=True)
    assert result.plan.dtype == torch.float32
    torch.testing.assert_close(result.plan, expected, rtol=1e-5, atol=1e-6)
    assert result.n_iter == expected_iter
    if scale == 4.0:
        assert expected_iter == 100  # the case meant to exhaust max_iter does
    else:
        assert expected_iter < 100


def test_transcription_cases_stop_off_the_check_grid():
    """The cases above include stops inside a check window (not a multiple of check_every=10)."""
    stops = {
        transcription(scale * cosine_cost(b, m, n, seed), eps)[1]
        for b, m, n, eps, seed, scale in TRANSCRIPTION_CASES
    }
    assert any(s % 10 != 0 for s in stops)


@pytest.mark.parametrize("batch,m,n,epsilon,seed,scale", TRANSCRIPTION_CASES[:4])
def test_result_does_not_depend_on_check_every(batch, m, n, epsilon, seed, scale):
    cost = scale * cosine_cost(batch, m, n, seed)
    _, expected_iter = transcription(cost, epsilon)
    results = [log_sinkhorn(cost, epsilon, check_every=k, return_info=True) for k in (1, 3, 10, 100)]
    for result in results:
        assert result.n_iter == expected_iter
        torch.testing.assert_close(result.plan, results[0].plan, rtol=0, atol=0)
        torch.testing.assert_close(result.u, results[0].u, rtol=0, atol=0)
        torch.testing.assert_close(result.v, results[0].v, rtol=0, atol=0)


def test_returned_potentials_give_the_plan():
    cost = cosine_cost(2, 16, 4, seed=0, dtype=torch.float64)
    result = log_sinkhorn(cost, 0.1, return_info=True)
    expected = torch.exp((result.u[:, :, None] + result.v[:, None, :] - cost) / 0.1)
    torch.testing.assert_close(result.plan, expected, rtol=1e-12, atol=0)
    assert result.u.shape == (2, 16) and result.v.shape == (2, 4)


@pytest.mark.parametrize("max_iter", [1, 7, 10, 25])
@pytest.mark.parametrize("check_every", [1, 10])
def test_max_iter_respected_when_tol_unreachable(max_iter, check_every):
    cost = cosine_cost(2, 16, 4, seed=0, dtype=torch.float64)
    result = log_sinkhorn(cost, 0.05, max_iter=max_iter, tol=0.0, check_every=check_every, return_info=True)
    assert result.n_iter == max_iter
    expected, expected_iter = transcription(cost, 0.05, max_iter=max_iter, tol=0.0)
    assert expected_iter == max_iter
    torch.testing.assert_close(result.plan, expected, rtol=1e-12, atol=0)


def test_huge_tol_stops_after_one_iteration():
    cost = cosine_cost(1, 8, 3, seed=0, dtype=torch.float64)
    result = log_sinkhorn(cost, 0.1, tol=1e9, return_info=True)
    assert result.n_iter == 1
    torch.testing.assert_close(result.plan, transcription(cost, 0.1, max_iter=1)[0], rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------------
# half precision
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [64, 1024])
def test_half_precision_costs(dtype, m):
    gen = torch.Generator().manual_seed(m)
    cost = (2 * torch.rand(2, m, 8, generator=gen)).to(dtype)
    plan = log_sinkhorn(cost, 0.05)
    assert plan.dtype == torch.float32
    assert torch.isfinite(plan).all()
    expected = log_sinkhorn(cost.float(), 0.05)
    torch.testing.assert_close(plan, expected, rtol=1e-5, atol=1e-9)
    # no underflow: the plan carries its mass (float16 would flush 1/(M N) ~ 1e-4 entries' products)
    torch.testing.assert_close(plan.sum((1, 2)), torch.ones(2), rtol=1e-3, atol=0)
    torch.testing.assert_close(plan.sum(1), torch.full((2, 8), 1 / 8), rtol=1e-3, atol=0)


# ------------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grad_mode", ["recompute", "checkpoint", "unrolled"])
@pytest.mark.parametrize("tol", [0.0, 1e-3])
def test_gradcheck_float64(grad_mode, tol):
    """Fixed iteration count (tol=0), and an early stop inside a check window (tol=1e-3)."""
    cost = cosine_cost(2, 4, 3, seed=0, dtype=torch.float64).requires_grad_(True)
    n_iter = log_sinkhorn(cost.detach(), 0.3, max_iter=8, tol=tol, check_every=5, return_info=True).n_iter
    assert n_iter == 8 if tol == 0.0 else 1 < n_iter < 5

    def solve(c):
        return log_sinkhorn(c, 0.3, max_iter=8, tol=tol, check_every=5, grad_mode=grad_mode)

    assert torch.autograd.gradcheck(solve, (cost,))


@pytest.mark.parametrize(
    ("grad_mode", "check_every"),
    [("recompute", 1), ("recompute", 3), ("recompute", 10), ("checkpoint", 3), ("unrolled", 10)],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "case", [(2, 16, 4, 0.1, 1, 1.0), (1, 64, 8, 0.05, 1, 1.0), (2, 16, 4, 0.05, 0, 4.0)]
)
def test_gradient_matches_transcription(grad_mode, check_every, dtype, case):
    """The gradient is the one of the reference's unrolled iterations up to its stopping iteration."""
    batch, m, n, epsilon, seed, scale = case
    cost = scale * cosine_cost(batch, m, n, seed, dtype=dtype)
    weights = torch.randn(batch, m, n, generator=torch.Generator().manual_seed(9), dtype=dtype)

    ours = cost.clone().requires_grad_(True)
    result = log_sinkhorn(ours, epsilon, check_every=check_every, grad_mode=grad_mode, return_info=True)
    (result.plan * weights).sum().backward()

    ref = cost.clone().requires_grad_(True)
    plan, ref_iter = transcription(ref, epsilon)
    (plan * weights).sum().backward()

    assert result.n_iter == ref_iter
    if dtype == torch.float64:
        torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-8, atol=1e-10)
    else:
        torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-3, atol=1e-5 * ref.grad.abs().max().item())
    assert ours.grad.abs().max() > 0


def test_gradient_of_half_cost():
    cost = (2 * torch.rand(1, 16, 4, generator=torch.Generator().manual_seed(0))).half()
    ours = cost.clone().requires_grad_(True)
    log_sinkhorn(ours, 0.1).square().sum().backward()
    ref = cost.float().requires_grad_(True)
    transcription(ref, 0.1)[0].square().sum().backward()
    assert ours.grad.dtype == torch.float16
    torch.testing.assert_close(
        ours.grad.float(), ref.grad, rtol=1e-2, atol=1e-3 * ref.grad.abs().max().item()
    )


@pytest.mark.parametrize(
    ("max_iter", "tol", "check_every"),
    [(100, 1e-6, 10), (100, 0.0, 10), (7, 1e-3, 3), (1, 0.0, 1), (37, 1e-5, 4)],
)
def test_checkpoint_gives_the_recompute_gradient_to_the_bit(max_iter, tol, check_every):
    """Rerunning a segment's iterations from its kept potentials reproduces the forward's exactly."""
    cost = 2 * torch.rand(3, 40, 5, generator=torch.Generator().manual_seed(max_iter))
    weights = torch.randn(3, 40, 5, generator=torch.Generator().manual_seed(1))
    grads = []
    for mode in ("recompute", "checkpoint"):
        leaf = cost.clone().requires_grad_(True)
        plan = log_sinkhorn(leaf, 0.05, max_iter, tol, check_every=check_every, grad_mode=mode)
        (plan * weights).sum().backward()
        grads.append(leaf.grad)
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().max() > 0


@pytest.mark.parametrize(
    ("max_iter", "tol", "kept"), [(100, 0.0, 11), (100, 1e-3, None), (8, 0.0, 3), (1, 0.0, 2)]
)
def test_recompute_keeps_small_potentials_and_every_kth_large_one(max_iter, tol, kept):
    """Memory of the recompute backward: the (B, N) potentials of every iteration, the (B, M) ones of iterations
    0, k, 2k, ... only, k = ceil(sqrt(max_iter)); the gradient tests above check that it still equals the
    unrolled one."""
    cost = cosine_cost(2, 16, 4, seed=0).requires_grad_(True)
    result = log_sinkhorn(cost, 0.05, max_iter=max_iter, tol=tol, grad_mode="checkpoint", return_info=True)
    keep_every = math.ceil(math.sqrt(max_iter))
    us, vs = result.plan.grad_fn.history  # the autograd node of the custom Function is its ctx
    assert len(us) == result.n_iter // keep_every + 1 == (kept or len(us))
    assert len(vs) == result.n_iter + 1
    assert all(u.shape == (2, 16) for u in us) and all(v.shape == (2, 4) for v in vs)
    if kept is None:  # an early stop between two kept iterations
        assert result.n_iter < max_iter and result.n_iter % keep_every


def test_detach_mode_gives_same_plan_without_gradient():
    cost = cosine_cost(2, 16, 4, seed=0).requires_grad_(True)
    detached = log_sinkhorn(cost, 0.1, grad_mode="detach")
    assert not detached.requires_grad
    torch.testing.assert_close(detached, log_sinkhorn(cost.detach(), 0.1), rtol=0, atol=0)
    assert log_sinkhorn(cost, 0.1).requires_grad


def test_grad_modes_give_the_same_plan():
    cost = cosine_cost(2, 16, 4, seed=0).requires_grad_(True)
    modes = ("recompute", "checkpoint", "unrolled", "detach")
    plans = [log_sinkhorn(cost, 0.05, grad_mode=mode) for mode in modes]
    for plan in plans[1:]:
        torch.testing.assert_close(plan, plans[0], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------
def test_rejects_2d_cost():
    with pytest.raises(ValueError, match=r"cost must have shape \(B, M, N\)"):
        log_sinkhorn(torch.rand(5, 3), 0.1)


@pytest.mark.parametrize("epsilon", [0.0, -0.1, float("nan")])
def test_rejects_non_positive_epsilon(epsilon):
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        log_sinkhorn(torch.rand(1, 5, 3), epsilon)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(source_marginal=torch.full((4,), 0.25)),
        dict(source_marginal=torch.full((3, 5), 0.2)),
        dict(target_marginal=torch.full((5,), 0.2)),
        dict(target_marginal=torch.full((2, 2, 3), 1 / 3)),
    ],
)
def test_rejects_marginal_of_wrong_shape(kwargs):
    with pytest.raises(ValueError, match="marginal must have shape"):
        log_sinkhorn(torch.rand(2, 5, 3), 0.1, **kwargs)


def test_rejects_max_iter_below_one():
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        log_sinkhorn(torch.rand(1, 5, 3), 0.1, max_iter=0)


def test_rejects_unknown_grad_mode():
    with pytest.raises(ValueError, match="grad_mode must be"):
        log_sinkhorn(torch.rand(1, 5, 3), 0.1, grad_mode="implicit")


def test_rejects_check_every_below_one():
    with pytest.raises(ValueError, match="check_every must be >= 1"):
        log_sinkhorn(torch.rand(1, 5, 3), 0.1, check_every=0)


# ------------------------------------------------------------------------------------------------
# property test
# ------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 2),
    m=st.integers(1, 6),
    n=st.integers(1, 5),
    epsilon=st.floats(0.2, 1.0),
    seed=st.integers(0, 2**16),
)
def test_property_marginals_and_non_negativity(batch, m, n, epsilon, seed):
    cost = torch.rand(batch, m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    plan = log_sinkhorn(cost, epsilon, max_iter=300, tol=0.0)
    assert (plan >= 0).all() and torch.isfinite(plan).all()
    torch.testing.assert_close(
        plan.sum(2), torch.full((batch, m), 1 / m, dtype=torch.float64), rtol=1e-6, atol=1e-8
    )
    torch.testing.assert_close(
        plan.sum(1), torch.full((batch, n), 1 / n, dtype=torch.float64), rtol=1e-6, atol=1e-8
    )


# ---------------------------------------------------------------------------------------------------
# stop_groups: each group of problems stops on its own (batch invariance at inference)
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("check_every", [1, 3, 10])
def test_stop_groups_each_group_stops_as_the_transcription_of_it_alone(check_every):
    # three groups of two problems with different scales: they converge after different numbers of iterations
    groups = [scale * cosine_cost(2, 12, 3, seed) for seed, scale in [(0, 1.0), (1, 2.0), (2, 0.5)]]
    result = log_sinkhorn(torch.cat(groups), 0.1, stop_groups=3, check_every=check_every, return_info=True)
    stops = []
    for index, group in enumerate(groups):
        expected, expected_iter = transcription(group, 0.1)
        torch.testing.assert_close(result.plan[2 * index : 2 * index + 2], expected, rtol=1e-5, atol=1e-7)
        stops.append(expected_iter)
    assert len(set(stops)) == 3  # the groups really stop apart
    assert result.n_iter == max(stops)


def test_stop_groups_a_group_gives_to_the_bit_what_it_gives_alone():
    cost = torch.cat([cosine_cost(3, 16, 4, 0), 3.0 * cosine_cost(3, 16, 4, 1)])
    together = log_sinkhorn(cost, 0.2, stop_groups=2)
    assert torch.equal(together[:3], log_sinkhorn(cost[:3], 0.2, stop_groups=1))
    assert torch.equal(together[3:], log_sinkhorn(cost[3:], 0.2, stop_groups=1))
    # one group is the batch-wide rule, to the bit
    assert torch.equal(log_sinkhorn(cost, 0.2, stop_groups=1), log_sinkhorn(cost, 0.2))
    # while the batch-wide rule couples the groups
    assert not torch.equal(log_sinkhorn(cost, 0.2)[:3], together[:3])


@pytest.mark.parametrize("bad", [0, 4, -1, 1.5, True])
def test_stop_groups_must_divide_the_batch(bad):
    with pytest.raises(ValueError, match="stop_groups must be a positive integer dividing the batch of 6"):
        log_sinkhorn(cosine_cost(6, 4, 2, 0), 0.1, stop_groups=bad)


def test_stop_groups_gradient_equals_the_unrolled_transcription():
    cost = cosine_cost(4, 6, 3, 0, dtype=torch.float64).requires_grad_()
    weights = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (log_sinkhorn(cost, 0.1, stop_groups=2) * weights).sum().backward()
    expected = torch.zeros_like(cost)
    for rows in (slice(0, 2), slice(2, 4)):
        alone = cost.detach()[rows].clone().requires_grad_()
        (transcription(alone, 0.1)[0] * weights[rows]).sum().backward()
        expected[rows] = alone.grad
    torch.testing.assert_close(cost.grad, expected, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# the in-place kernels of the eager loop give torch.logsumexp's numbers to the bit
# ------------------------------------------------------------------------------------------------
def _strided_cosine_cost(classes, m, n, seed):
    """A cost laid out as the model makes it: (1 - einsum('bmd,bknd->bkmn')) flattened, a strided view."""
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.nn.functional.normalize(torch.randn(1, m, 16, generator=gen), dim=-1)
    prompts = torch.nn.functional.normalize(torch.randn(1, classes, n, 16, generator=gen), dim=-1)
    return (1 - torch.einsum("bmd,bknd->bkmn", pixels, prompts)).flatten(0, 1)


@pytest.mark.parametrize("contiguous", [True, False])
def test_loop_without_autograd_gives_the_recorded_loop_to_the_bit(contiguous):
    """Without autograd the loop reduces its kernels in place in one buffer; with autograd recording
    (grad_mode="unrolled") it runs `torch.logsumexp` on fresh tensors. The plans, potentials and stopping
    iteration must be identical, for the model's strided costs too."""
    cost = _strided_cosine_cost(7, 64, 8, seed=3)
    assert not cost.is_contiguous()
    cost = cost.contiguous() if contiguous else cost
    with torch.no_grad():
        fast = log_sinkhorn(cost, 0.05, return_info=True, stop_groups=1)
    recorded = log_sinkhorn(cost.clone().requires_grad_(), 0.05, grad_mode="unrolled", return_info=True)
    assert fast.n_iter == recorded.n_iter
    assert torch.equal(fast.plan, recorded.plan.detach())
    assert torch.equal(fast.u, recorded.u.detach()) and torch.equal(fast.v, recorded.v.detach())
