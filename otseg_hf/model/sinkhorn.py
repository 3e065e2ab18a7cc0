"""Batched entropic optimal transport in the log domain (pure torch).

Solves, for every batch element b independently,

    T_b = argmin_{T >= 0, T 1 = mu_b, T^T 1 = nu_b}  <T, C_b> - eps * H(T)

with the log-domain Sinkhorn iterations of the OTSeg reference (spec section 6):

    u <- u + eps * (log(mu + 1e-8) - logsumexp_n((u_m + v_n - C_mn) / eps))
    v <- v + eps * (log(nu + 1e-8) - logsumexp_m((u_m + v_n - C_mn) / eps))
    T  = exp((u_m + v_n - C_mn) / eps)

starting from u = v = 0, for at most `max_iter` iterations, stopping after the first iteration
whose mean |u - u_prev| (mean over the whole batch) is below `tol`. With `stop_groups=G` the batch
is G equal groups (at inference: the K problems of one image) and each group stops on its own mean
error, so a group's plan does not depend on the other groups in the batch. `tol <= 0` runs exactly
`max_iter` iterations and makes no convergence test at all.

The reference reads the error back to the host after every iteration. Here, eagerly, the errors
stay on the device and are read once every `check_every` iterations; the potentials of every
iteration in that window are kept (they are small: (B, M) and (B, N)), so the result is the one of
the first converged iteration exactly as if it had been checked every time.

Under `torch.compile` the solver is an opaque custom operator (`_register_opaque_ops`): the compiled program
calls this eager solver and its exact backward as they are, so they give eager's numbers to the bit, read
the error back once every `check_every` iterations (with `tol <= 0` never), and inductor generates no code
for them (the compile time does not depend on the solver). Under `torch.export` (ONNX) the loop is a
`while_loop` whose condition is the same stopping rule, so the graph holds one iteration whatever `max_iter`
is; with `tol <= 0` and no gradient it is a plain unrolled loop (`_iterate_compiled`); with a gradient it is
`_SinkhornLoopWithGrad`. No Python-level host read is traced in any of these (`fullgraph=True` compiles them).

References:
    Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013.
    Peyre & Cuturi, "Computational Optimal Transport", 2019, section 4.4 (log-domain updates).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .sinkhorn_iterations import (
    _iterate,
    _iterate_compiled,
    _kernel,
    _recompute_backward,
    _SinkhornLoopWithGrad,
    _SinkhornRecompute,
)

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


def _operator_namespace(module_name: str, op_name: str) -> str:
    """A `torch.library` namespace for `op_name` made from `module_name` (a copy of this closure under another
    module name gets its own), with a numeric suffix if a module of that name already registered it (a Hub
    module re-executed under its name by transformers after its file changed)."""
    base = "otseg_" + "".join(c if c.isalnum() else "_" for c in module_name)
    namespace, count = base, 1
    while hasattr(getattr(torch.ops, namespace), op_name):
        count += 1
        namespace = f"{base}_{count}"
    return namespace


def _register_opaque_ops():
    """`(solve, solve_backward)`: the eager solver (`_iterate`) and its backward (`_recompute_backward`) as
    custom operators with an autograd formula, which `torch.compile` calls as they are: opaque, so inductor
    generates no code for the loop (a traced `while_loop` and its hand-written backward made about a third of
    a training step's compile time), and the compiled model gets eager's numbers to the bit. Registered at
    import (an operator cannot be registered while being traced; about 4 ms) under a name made from this
    module's name (`_operator_namespace`), so that two copies of this file (the package's and a Hub folder's
    remote code) do not clash."""
    namespace = _operator_namespace(__name__, "solve")
    solve_schema = (
        "(Tensor cost, Tensor log_mu, Tensor log_nu, float epsilon, int max_iter, float tol, "
        "int check_every, int keep_every, SymInt groups, bool history) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    )
    backward_schema = (
        "(Tensor grad_plan, Tensor cost, Tensor plan, Tensor log_mu, Tensor us, Tensor vs, Tensor n_iter, "
        "Tensor group_iters, float epsilon, int keep_every) -> Tensor"
    )

    @torch.library.custom_op(f"{namespace}::solve", mutates_args=(), schema=solve_schema)
    def solve(cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, keep_every, groups, history):
        """(plan, u, v, n_iter (), group_iters (groups,), kept source potentials, target potentials); the two
        histories (`_iterate`'s, stacked) are empty without `history`. `groups=0`: the batch-wide rule."""
        kept = ([], []) if history else None
        u, v, n_iter, group_iters = _iterate(
            cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, kept, keep_every, groups or None
        )
        plan = torch.exp(_kernel(u, v, cost, epsilon))
        batch, m, n = cost.shape
        us = torch.stack(kept[0]) if history else cost.new_empty(0, batch, m)
        vs = torch.stack(kept[1]) if history else cost.new_empty(0, batch, n)
        # the iteration counts stay on the host (CPU tensors on any device): the backward reads them there
        iters = torch.tensor(group_iters or [], dtype=torch.long)
        return plan, u.clone(), v.clone(), torch.tensor(n_iter), iters, us, vs

    @solve.register_fake
    def _(cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, keep_every, groups, history):
        batch, m, n = cost.shape
        ctx = torch.library.get_ctx()
        kept_u = ctx.new_dynamic_size() if history else 0
        kept_v = ctx.new_dynamic_size() if history else 0
        return (
            cost.new_empty(batch, m, n), cost.new_empty(batch, m), cost.new_empty(batch, n),
            torch.empty((), dtype=torch.long, device="cpu"),
            torch.empty(groups, dtype=torch.long, device="cpu"),
            cost.new_empty(kept_u, batch, m), cost.new_empty(kept_v, batch, n),
        )

    @torch.library.custom_op(f"{namespace}::solve_backward", mutates_args=(), schema=backward_schema)
    def solve_backward(grad_plan, cost, plan, log_mu, us, vs, n_iter, group_iters, epsilon, keep_every):
        iters = group_iters.tolist() or None
        return _recompute_backward(
            grad_plan.contiguous(), cost, plan, log_mu, us, vs, epsilon, keep_every, int(n_iter), iters
        )

    @solve_backward.register_fake
    def _(grad_plan, cost, plan, log_mu, us, vs, n_iter, group_iters, epsilon, keep_every):
        return torch.empty_like(cost)

    def setup_context(ctx, inputs, output):
        cost, log_mu, _, epsilon, _, _, _, keep_every, _, _ = inputs
        plan, _, _, n_iter, group_iters, us, vs = output
        ctx.save_for_backward(cost, plan, log_mu, us, vs, n_iter, group_iters)
        ctx.epsilon, ctx.keep_every = epsilon, keep_every

    def backward(ctx, grad_plan, *_):
        cost, plan, log_mu, us, vs, n_iter, group_iters = ctx.saved_tensors
        grad = solve_backward(
            grad_plan, cost, plan, log_mu, us, vs, n_iter, group_iters, ctx.epsilon, ctx.keep_every
        )
        return grad, None, None, None, None, None, None, None, None, None

    solve.register_autograd(backward, setup_context=setup_context)
    return solve, solve_backward


_opaque_solve, _ = _register_opaque_ops()  # (at import: a custom op cannot be registered while being traced)


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
        tol (`float`, defaults to 1e-6): stop after the first iteration whose mean |u - u_prev| is below it
            (mean over the batch, or over each group: `stop_groups`). `tol <= 0` runs exactly `max_iter`
            iterations and never reads anything back to the host (the opt-in fixed iteration count).
        source_marginal (`torch.Tensor` of shape (B, M) or (M,), *optional*): row sums of the plan;
            uniform 1/M if not given.
        target_marginal (`torch.Tensor` of shape (B, N) or (N,), *optional*): column sums of the plan;
            uniform 1/N if not given.
        check_every (`int`, defaults to 10): the convergence test is read back to the host once per
            this many iterations (a performance knob: the result does not depend on it), also under
            `torch.compile`. Not used under `torch.export` (see below); under `torch.jit.trace` no check is
            made and exactly `max_iter` iterations run.
        grad_mode (`str`, defaults to `"recompute"`): how gradients reach `cost`, all exactly through the
            unrolled iterations. `"recompute"` keeps only the potentials of each iteration and recomputes
            the (B, M, N) kernels in the backward pass (memory O(iterations x B (M + N)));
            `"checkpoint"` keeps the (B, M) potentials of every ceil(sqrt(max_iter))-th iteration only and
            recomputes the others too: the same gradient to the bit, less memory (iterations x B N +
            O(sqrt(max_iter) x B M)) for one more logsumexp per iteration in the backward pass;
            `"unrolled"` lets autograd record every iteration (memory O(iterations x B M N); needed for
            double backward and tracing). `"detach"` returns a plan without gradient.
        return_info (`bool`, defaults to False): return a `SinkhornResult` instead of the plan alone.
        stop_groups (`int`, *optional*): the batch is this many groups of B / stop_groups consecutive problems
            (at inference: the K problems of one image), and each group stops on its own: after the first
            iteration whose mean |u - u_prev| over the group is below `tol`, its potentials are those of that
            iteration, whatever the other groups still run. A group's plan is then the one the group alone
            gives alone, to the bit, so an image's result does not depend on the other images in its batch
            (the models pass the number of images at inference, as the reference segments one image at a time). `None` (the reference's rule, used in training): one mean over the whole batch.
            `n_iter` is then the largest group's count.

    Under `torch.compile` the solver runs as an opaque custom operator: these eager iterations and, with a
    gradient, the `"recompute"` / `"checkpoint"` backward (`"unrolled"` is `"recompute"` there; no double
    backward), so a compiled model gives eager's plans and gradients to the bit, and its compile time does not
    depend on the solver. With `tol <= 0` a call reads nothing back to the host. Under `torch.export` the same
    iterations and stopping rule run as a `while_loop` (the graph holds one iteration, so export time does not
    grow with `max_iter`; the loop condition is the stopping test, evaluated once per iteration); without a
    gradient and with `tol <= 0` as a plain loop of `max_iter` iterations. `n_iter` is a 0-d tensor under
    both (on the CPU under `torch.compile`).

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
    if tol != tol:
        raise ValueError(f"tol must be a number (<= 0 for a fixed iteration count), got {tol}")
    if (
        stop_groups is not None
        and not isinstance(stop_groups, torch.SymInt)  # a traced batch size (torch.export, dynamic shapes)
        and (
            isinstance(stop_groups, bool)
            or not isinstance(stop_groups, int)
            or stop_groups < 1
            or cost.shape[0] % stop_groups
        )
    ):
        raise ValueError(
            f"stop_groups must be a positive integer dividing the batch of {cost.shape[0]} problems "
            f"(one group per image), got {stop_groups!r}"
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

    compiling = torch.compiler.is_compiling()  # also under torch.export
    if grad_mode == "detach":
        cost = cost.detach()
    with torch.autocast(cost.device.type, enabled=False):  # float32 even under autocast
        if compiling and not torch.compiler.is_exporting():
            history = cost.requires_grad and torch.is_grad_enabled()  # "unrolled" is "recompute" here
            keep_every = math.isqrt(max_iter - 1) + 1 if grad_mode == "checkpoint" else 1
            plan, u, v, n_iter, _, _, _ = _opaque_solve(
                cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, keep_every, stop_groups or 0,
                history,
            )
        elif compiling and cost.requires_grad and torch.is_grad_enabled():
            plan, u, v, iterations = _SinkhornLoopWithGrad.apply(
                cost, log_mu, log_nu, epsilon, max_iter, tol, stop_groups
            )
            n_iter = iterations[-1]
        elif compiling:
            u, v, n_iter = _iterate_compiled(cost, log_mu, log_nu, epsilon, max_iter, tol, stop_groups)
            plan = torch.exp(_kernel(u, v, cost, epsilon))
        elif (
            grad_mode in ("recompute", "checkpoint")
            and cost.requires_grad
            and torch.is_grad_enabled()
            and not torch.jit.is_tracing()
        ):
            keep_every = 1 if grad_mode == "recompute" else math.isqrt(max_iter - 1) + 1  # ceil(sqrt(max_iter))
            plan, u, v, n_iter = _SinkhornRecompute.apply(
                cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, keep_every, stop_groups
            )
            n_iter = int(n_iter)
        else:
            u, v, n_iter, _ = _iterate(
                cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, groups=stop_groups
            )
            plan = torch.exp(_kernel(u, v, cost, epsilon))
    if return_info:
        return SinkhornResult(plan, u, v, n_iter)
    return plan
