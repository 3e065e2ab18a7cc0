"""Batched entropic optimal transport in the log domain (pure torch).

Solves, for every batch element b independently,

    T_b = argmin_{T >= 0, T 1 = mu_b, T^T 1 = nu_b}  <T, C_b> - eps * H(T)

with the log-domain Sinkhorn iterations of the OTSeg reference (spec section 6):

    u <- u + eps * (log(mu + 1e-8) - logsumexp_n((u_m + v_n - C_mn) / eps))
    v <- v + eps * (log(nu + 1e-8) - logsumexp_m((u_m + v_n - C_mn) / eps))
    T  = exp((u_m + v_n - C_mn) / eps)

starting from u = v = 0, for at most `max_iter` iterations, stopping after the first iteration
whose mean |u - u_prev| (mean over the whole batch) is below `tol`.

The reference reads the error back to the host after every iteration. Here the errors stay on
the device and are read once every `check_every` iterations; the potentials of every iteration
in that window are kept (they are small: (B, M) and (B, N)), so the result is the one of the
first converged iteration exactly as if it had been checked every time.

References:
    Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013.
    Peyre & Cuturi, "Computational Optimal Transport", 2019, section 4.4 (log-domain updates).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

_LOG_EPS = 1e-8  # the reference adds this inside log(mu) and log(nu)


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


def _iterate(cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, history=None):
    """Run the iterations; return the potentials of the first converged iteration and its number.

    When `history` is a list, the potentials of every iteration (u_0, v_0 first) are appended to it
    up to the returned one.
    """
    batch, m, n = cost.shape
    u, v = cost.new_zeros(batch, m), cost.new_zeros(batch, n)
    if history is not None:
        history.append((u, v))
    fixed_count = torch.jit.is_tracing() or torch.compiler.is_compiling()
    window: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (u, v, err) per iteration
    for it in range(1, max_iter + 1):
        u_prev = u
        u = u + epsilon * (log_mu - torch.logsumexp(_kernel(u, v, cost, epsilon), dim=2))
        v = v + epsilon * (log_nu - torch.logsumexp(_kernel(u, v, cost, epsilon), dim=1))
        if fixed_count:
            continue
        window.append((u, v, (u - u_prev).abs().mean()))
        if it % check_every == 0 or it == max_iter:
            converged = torch.stack([err.detach() for _, _, err in window]) < tol
            hits = converged.nonzero()  # the one host synchronisation of this window
            first = int(hits[0, 0]) if hits.numel() > 0 else len(window) - 1
            if history is not None:
                history.extend((wu, wv) for wu, wv, _ in window[: first + 1])
            if hits.numel() > 0 or it == max_iter:
                u, v, _ = window[first]
                return u, v, it - len(window) + 1 + first
            window.clear()
    return u, v, max_iter


class _SinkhornRecompute(torch.autograd.Function):
    """Sinkhorn with an exact backward through the unrolled iterations that keeps only the potentials
    of each iteration ((B, M) + (B, N)) and recomputes the (B, M, N) kernels in reverse order.

    In the iterations u_t depends on v_{t-1} and C only (d u_t / d u_{t-1} = 1 - sum_n P_u = 0), and v_t
    on u_t and C only. With P_u = softmax_n((u_{t-1} + v_{t-1} - C) / eps) and
    P_v = softmax_m((u_t + v_{t-1} - C) / eps), one iteration backwards is:
        du_t     += -sum_n P_v dv_t          dC += P_v dv_t
        dv_{t-1}  = -sum_m P_u du_t          dC += P_u du_t
    """

    @staticmethod
    def forward(ctx, cost, log_mu, log_nu, epsilon, max_iter, tol, check_every):
        history: list[tuple[torch.Tensor, torch.Tensor]] = []
        u, v, n_iter = _iterate(cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, history)
        plan = torch.exp(_kernel(u, v, cost, epsilon))
        ctx.save_for_backward(cost, plan)
        ctx.history, ctx.epsilon = history, epsilon
        ctx.mark_non_differentiable(u, v)
        return plan, u, v, torch.tensor(n_iter)

    @staticmethod
    def backward(ctx, grad_plan, _grad_u, _grad_v, _grad_n):
        cost, plan = ctx.saved_tensors
        history, epsilon = ctx.history, ctx.epsilon
        scaled_cost = cost / epsilon

        def softmax_kernel(u, v, dim):  # softmax over `dim` of (u_m + v_n - C_mn) / eps
            return torch.softmax(
                (u / epsilon).unsqueeze(2) + (v / epsilon).unsqueeze(1) - scaled_cost, dim=dim
            )

        grad_z = grad_plan * plan  # through T = exp(Z), Z = (u + v - C) / eps
        grad_u = grad_z.sum(2) / epsilon
        grad_v = grad_z.sum(1) / epsilon
        grad_cost = grad_z.div_(-epsilon)
        for t in range(len(history) - 1, 0, -1):
            u_prev, v_prev = history[t - 1]
            weighted = softmax_kernel(history[t][0], v_prev, dim=1).mul_(grad_v.unsqueeze(1))
            grad_cost.add_(weighted)
            grad_u = grad_u - weighted.sum(2)
            weighted = softmax_kernel(u_prev, v_prev, dim=2).mul_(grad_u.unsqueeze(2))
            grad_cost.add_(weighted)
            grad_v = -weighted.sum(1)
            grad_u = torch.zeros_like(grad_u)
        return grad_cost, None, None, None, None, None, None


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
        grad_mode (`str`, defaults to `"recompute"`): how gradients reach `cost`, both exactly through the
            unrolled iterations. `"recompute"` keeps only the potentials of each iteration and recomputes
            the (B, M, N) kernels in the backward pass (memory O(iterations x B (M + N)));
            `"unrolled"` lets autograd record every iteration (memory O(iterations x B M N); needed for
            double backward and tracing). `"detach"` returns a plan without gradient.
        return_info (`bool`, defaults to False): return a `SinkhornResult` instead of the plan alone.

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
    if grad_mode not in ("recompute", "unrolled", "detach"):
        raise ValueError(f"grad_mode must be 'recompute', 'unrolled' or 'detach', got {grad_mode!r}")
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
    if grad_mode == "recompute" and cost.requires_grad and torch.is_grad_enabled() and not tracing:
        plan, u, v, n_iter = _SinkhornRecompute.apply(
            cost, log_mu, log_nu, epsilon, max_iter, tol, check_every
        )
        n_iter = int(n_iter)
    else:
        u, v, n_iter = _iterate(cost, log_mu, log_nu, epsilon, max_iter, tol, check_every)
        plan = torch.exp(_kernel(u, v, cost, epsilon))
    if return_info:
        return SinkhornResult(plan, u, v, n_iter)
    return plan
