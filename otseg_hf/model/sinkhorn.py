"""Batched entropic optimal transport in the log domain (pure torch).

Solves, for every batch element b independently,

    T_b = argmin_{T >= 0, T 1 = mu_b, T^T 1 = nu_b}  <T, C_b> - eps * H(T)

with the log-domain Sinkhorn iterations of the OTSeg reference (spec section 6):

    u <- u + eps * (log(mu + 1e-8) - logsumexp_n((u_m + v_n - C_mn) / eps))
    v <- v + eps * (log(nu + 1e-8) - logsumexp_m((u_m + v_n - C_mn) / eps))
    T  = exp((u_m + v_n - C_mn) / eps)

starting from u = v = 0, for at most `max_iter` iterations, stopping after the first iteration
whose mean |u - u_prev| (mean over the whole batch) is below `tol`. With `stop_groups=G` the batch is G
groups of B / G consecutive problems (for the models: the K class problems of one image) and each group
stops on its own mean error, so a group's plans do not depend on the other groups in the batch (the
reference segments one image at a time at inference).

The reference reads the error back to the host after every iteration. Here the errors stay on
the device and are read once every `check_every` iterations; the potentials of every iteration
in that window are kept (they are small: (B, M) and (B, N)), so the result is the one of the
first converged iteration exactly as if it had been checked every time.

References:
    Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013.
    Peyre & Cuturi, "Computational Optimal Transport", 2019, section 4.4 (log-domain updates).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

_LOG_EPS = 1e-8  # the reference adds this inside log(mu) and log(nu)
GRAD_MODES = ("recompute", "checkpoint", "unrolled", "detach")


class SinkhornResult(NamedTuple):
    """What `log_sinkhorn(..., return_info=True)` returns.

    Attributes:
        plan: (B, M, N) transport plans.
        u: (B, M) source potentials of the returned plan.
        v: (B, N) target potentials of the returned plan.
        n_iter: number of iterations run (the converged one included).
    """

    plan: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    n_iter: int


def _check_marginal(marginal: torch.Tensor | None, batch: int, size: int, name: str, like: torch.Tensor):
    if marginal is None:
        return torch.full((batch, size), 1.0 / size, dtype=like.dtype, device=like.device)
    if marginal.dim() == 1:
        marginal = marginal.unsqueeze(0).expand(batch, -1)
    if marginal.shape != (batch, size):
        raise ValueError(
            f"{name} must have shape ({batch}, {size}) or ({size},), got {tuple(marginal.shape)}"
        )
    return marginal.to(dtype=like.dtype, device=like.device)


def _kernel(u: torch.Tensor, v: torch.Tensor, cost: torch.Tensor, epsilon: float) -> torch.Tensor:
    """(B, M, N): (u_m + v_n - C_mn) / eps."""
    return (u.unsqueeze(2) + v.unsqueeze(1) - cost) / epsilon


def _update_u(u, v, cost, log_mu, epsilon):
    """The first half of an iteration: u_t from (u_{t-1}, v_{t-1})."""
    return u + epsilon * (log_mu - torch.logsumexp(_kernel(u, v, cost, epsilon), dim=2))


def _iterate_groups(cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, stop_groups):
    """`_iterate` where each of `stop_groups` groups of consecutive problems stops at its own first iteration
    whose mean |u - u_prev| over the group is below `tol` (all groups iterate until the last one stops; the
    problems are independent, so a converged group's later iterates are computed but never returned)."""
    batch, m, n = cost.shape
    size = batch // stop_groups
    u, v = cost.new_zeros(batch, m), cost.new_zeros(batch, n)
    done_u: list[torch.Tensor | None] = [None] * stop_groups  # (size, M) potentials of each stopped group
    done_v: list[torch.Tensor | None] = [None] * stop_groups
    done_iter = [max_iter] * stop_groups
    window: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (u, v, err (G,)) per iteration
    for it in range(1, max_iter + 1):
        u_prev = u
        u = _update_u(u, v, cost, log_mu, epsilon)
        v = v + epsilon * (log_nu - torch.logsumexp(_kernel(u, v, cost, epsilon), dim=1))
        change = (u - u_prev).abs()
        # each group's error is the mean of its own slice, the reduction a batch of that group alone makes
        window.append((u, v, torch.stack([change[g * size : (g + 1) * size].mean() for g in range(stop_groups)])))
        if it % check_every == 0 or it == max_iter:
            converged = torch.stack([err.detach() for _, _, err in window]) < tol  # (window, G)
            converged[-1] |= it == max_iter
            start = it - len(window) + 1
            for g in range(stop_groups):
                hits = converged[:, g].nonzero()
                if done_u[g] is None and hits.numel() > 0:
                    first = int(hits[0, 0])
                    wu, wv, _ = window[first]
                    rows = slice(g * size, (g + 1) * size)
                    done_u[g], done_v[g], done_iter[g] = wu[rows], wv[rows], start + first
            window.clear()
            if all(done is not None for done in done_u):
                break
    return torch.cat(done_u), torch.cat(done_v), max(done_iter)


def _iterate(cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, history=None, keep_every=1):
    """Run the iterations; return the potentials of the first converged iteration and its number.

    When `history` is a pair of lists `(us, vs)`, the source potentials of iterations 0, keep_every,
    2 keep_every, ... and the target potentials of every iteration (u_0 = v_0 = 0 first) are appended to
    them up to the returned iteration.
    """
    batch, m, n = cost.shape
    u, v = cost.new_zeros(batch, m), cost.new_zeros(batch, n)
    if history is not None:
        history[0].append(u)
        history[1].append(v)
    fixed_count = torch.jit.is_tracing() or torch.compiler.is_compiling()
    window: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (u, v, err) per iteration
    for it in range(1, max_iter + 1):
        u_prev = u
        u = _update_u(u, v, cost, log_mu, epsilon)
        v = v + epsilon * (log_nu - torch.logsumexp(_kernel(u, v, cost, epsilon), dim=1))
        if fixed_count:
            continue
        window.append((u, v, (u - u_prev).abs().mean()))
        if it % check_every == 0 or it == max_iter:
            converged = torch.stack([err.detach() for _, _, err in window]) < tol
            hits = converged.nonzero()  # the one host synchronisation of this window
            first = int(hits[0, 0]) if hits.numel() > 0 else len(window) - 1
            start = it - len(window) + 1  # the iteration of window[0]
            if history is not None:
                for t, (wu, wv, _) in enumerate(window[: first + 1], start):
                    if t % keep_every == 0:
                        history[0].append(wu)
                    history[1].append(wv)
            if hits.numel() > 0 or it == max_iter:
                u, v, _ = window[first]
                return u, v, start + first
            window.clear()
    return u, v, max_iter


class _SinkhornRecompute(torch.autograd.Function):
    """Sinkhorn with an exact backward through the unrolled iterations that keeps only the potentials and
    recomputes the (B, M, N) kernels in reverse order.

    `keep_every=1` (grad_mode "recompute") keeps u_t (B, M) and v_t (B, N) of every iteration. `keep_every=k`
    (grad_mode "checkpoint", k = ceil(sqrt(max_iter))) keeps v_t of every iteration (N, the prompts, is the
    small side) and u_t of every k-th only; the backward pass goes through the iterations in segments of k
    from the last and recomputes a segment's u_t from its first one with the forward's own update (the same
    operations on the same inputs: the same u_t, to the bit, so the same gradient). Memory: about
    iterations x B N + (iterations / k + k) x B M numbers instead of iterations x B (M + N); time: one more
    logsumexp over (B, M, N) per iteration.

    In the iterations u_t depends on v_{t-1} and C only (d u_t / d u_{t-1} = 1 - sum_n P_u = 0), and v_t
    on u_t and C only. With P_u = softmax_n((u_{t-1} + v_{t-1} - C) / eps) and
    P_v = softmax_m((u_t + v_{t-1} - C) / eps), one iteration backwards is:
        du_t     += -sum_n P_v dv_t          dC += P_v dv_t
        dv_{t-1}  = -sum_m P_u du_t          dC += P_u du_t
    """

    @staticmethod
    def forward(ctx, cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, keep_every):
        history: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        u, v, n_iter = _iterate(
            cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, history, keep_every
        )
        plan = torch.exp(_kernel(u, v, cost, epsilon))
        ctx.save_for_backward(cost, plan, log_mu)
        ctx.history, ctx.epsilon, ctx.keep_every, ctx.n_iter = history, epsilon, keep_every, n_iter
        ctx.mark_non_differentiable(u, v)
        return plan, u, v, torch.tensor(n_iter)

    @staticmethod
    def backward(ctx, grad_plan, _grad_u, _grad_v, _grad_n):
        cost, plan, log_mu = ctx.saved_tensors
        (u_kept, vs), epsilon, keep_every = ctx.history, ctx.epsilon, ctx.keep_every
        scaled_cost = cost / epsilon

        def softmax_kernel(u, v, dim):  # softmax over `dim` of (u_m + v_n - C_mn) / eps
            return torch.softmax(
                (u / epsilon).unsqueeze(2) + (v / epsilon).unsqueeze(1) - scaled_cost, dim=dim
            )

        grad_z = grad_plan * plan  # through T = exp(Z), Z = (u + v - C) / eps
        grad_u = grad_z.sum(2) / epsilon
        grad_v = grad_z.sum(1) / epsilon
        grad_cost = grad_z.div_(-epsilon)
        for first in reversed(range(0, ctx.n_iter, keep_every)):  # segments first .. last
            last = min(first + keep_every, ctx.n_iter)
            if keep_every == 1:
                us = u_kept[first : last + 1]
            else:  # u_first .. u_last
                us = [u_kept[first // keep_every]]
                for t in range(first + 1, last + 1):
                    us.append(_update_u(us[-1], vs[t - 1], cost, log_mu, epsilon))
            for t in range(last, first, -1):
                u_prev, v_prev = us[t - 1 - first], vs[t - 1]
                weighted = softmax_kernel(us[t - first], v_prev, dim=1).mul_(grad_v.unsqueeze(1))
                grad_cost.add_(weighted)
                grad_u = grad_u - weighted.sum(2)
                weighted = softmax_kernel(u_prev, v_prev, dim=2).mul_(grad_u.unsqueeze(2))
                grad_cost.add_(weighted)
                grad_v = -weighted.sum(1)
                grad_u = torch.zeros_like(grad_u)
        return grad_cost, None, None, None, None, None, None, None


def log_sinkhorn(
    cost: torch.Tensor,
    epsilon: float,
    max_iter: int = 100,
    tol: float = 1e-6,
    source_marginal: torch.Tensor | None = None,
    target_marginal: torch.Tensor | None = None,
    check_every: int = 10,
    grad_mode: str = "recompute",
    return_info: bool = False,
    stop_groups: int | None = None,
) -> torch.Tensor | SinkhornResult:
    """Entropic OT plans for a batch of cost matrices, log-domain Sinkhorn.

    Args:
        cost (`torch.Tensor` of shape (B, M, N)): cost matrices, one problem per leading index.
        epsilon (`float`): entropic regularisation, > 0.
        max_iter (`int`, defaults to 100): most iterations.
        tol (`float`, defaults to 1e-6): stop once mean |u - u_prev| over the batch is below it.
        source_marginal (`torch.Tensor` of shape (B, M) or (M,), *optional*): row sums of the plan;
            uniform 1/M if not given.
        target_marginal (`torch.Tensor` of shape (B, N) or (N,), *optional*): column sums of the plan;
            uniform 1/N if not given.
        check_every (`int`, defaults to 10): the convergence test is read back to the host once per
            this many iterations (a performance knob: the result does not depend on it). When tracing
            or compiling, no check is made and exactly `max_iter` iterations run.
        grad_mode (`str`, defaults to `"recompute"`): how gradients reach `cost`, all exactly through the
            unrolled iterations. `"recompute"` keeps only the potentials of each iteration and recomputes
            the (B, M, N) kernels in the backward pass (memory O(iterations x B (M + N)));
            `"checkpoint"` keeps the (B, M) potentials of every ceil(sqrt(max_iter))-th iteration only and
            recomputes the others too: the same gradient to the bit, less memory (iterations x B N +
            O(sqrt(max_iter) x B M)) for one more logsumexp per iteration in the backward pass;
            `"unrolled"` lets autograd record every iteration (memory O(iterations x B M N); needed for
            double backward and tracing). `"detach"` returns a plan without gradient.
        return_info (`bool`, defaults to False): return a `SinkhornResult` instead of the plan alone.
        stop_groups (`int`, *optional*): the batch is this many groups of B / stop_groups consecutive
            problems, and each group stops at the first iteration whose mean |u - u_prev| over the group is
            below `tol`, independently of the others: a group gives, bit for bit, what it gives solved alone.
            The models pass the number of images at inference (each image's class problems stop together, as
            when the reference segments one image at a time); `None` (training) is the batch-wide rule. The
            gradient of the grouped rule is autograd's through the iterations (as `"unrolled"`);
            `n_iter` is the largest group's count.

    Returns:
        The plan (B, M, N), or a `SinkhornResult`. float16/bfloat16 costs are solved in float32 and
        the plan is returned in float32 (plan entries are about 1/(M N) and underflow in float16).
        Gradients with respect to the marginals are not computed.
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must have shape (B, M, N), got {tuple(cost.shape)}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    if grad_mode not in GRAD_MODES:
        raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}")
    if stop_groups is not None and (
        isinstance(stop_groups, bool)
        or not isinstance(stop_groups, int)
        or stop_groups < 1
        or cost.shape[0] % stop_groups
    ):
        raise ValueError(
            f"stop_groups must be a positive integer dividing the batch of {cost.shape[0]} problems, "
            f"got {stop_groups!r}"
        )
    if cost.dtype in (torch.float16, torch.bfloat16):
        cost = cost.float()
    batch, m, n = cost.shape
    log_mu = torch.log(
        _check_marginal(source_marginal, batch, m, "source_marginal", cost) + _LOG_EPS
    ).detach()
    log_nu = torch.log(
        _check_marginal(target_marginal, batch, n, "target_marginal", cost) + _LOG_EPS
    ).detach()

    tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
    if grad_mode == "detach":
        cost = cost.detach()
    if stop_groups is not None and not tracing:
        u, v, n_iter = _iterate_groups(cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, stop_groups)
        plan = torch.exp(_kernel(u, v, cost, epsilon))
    elif (
        grad_mode in ("recompute", "checkpoint")
        and cost.requires_grad
        and torch.is_grad_enabled()
        and not tracing
    ):
        keep_every = 1 if grad_mode == "recompute" else math.isqrt(max_iter - 1) + 1  # ceil(sqrt(max_iter))
        plan, u, v, n_iter = _SinkhornRecompute.apply(
            cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, keep_every
        )
        n_iter = int(n_iter)
    else:
        u, v, n_iter = _iterate(cost, log_mu, log_nu, epsilon, max_iter, tol, check_every)
        plan = torch.exp(_kernel(u, v, cost, epsilon))
    if return_info:
        return SinkhornResult(plan, u, v, n_iter)
    return plan
