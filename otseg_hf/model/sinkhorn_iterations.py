"""The log-domain Sinkhorn iterations behind `sinkhorn.log_sinkhorn`, and their exact backward.

- `_iterate`: the eager loop (the reference's updates, errors kept on the device and read once every
  `check_every` iterations, optionally the potentials of every `keep_every`-th iteration for the backward);
- `_iterate_compiled`: the same stopping rule as one `while_loop` (`torch.export` / ONNX), or a plain loop
  with `tol <= 0`;
- `_SinkhornRecompute` / `_recompute_backward`: the exact gradient through the unrolled iterations from the
  kept potentials, recomputing the (B, M, N) kernels in reverse order;
- `_SinkhornLoopWithGrad`: `_iterate_compiled` with that gradient, for an exported graph that differentiates.

The formulas and the stopping rule are documented in `sinkhorn` (spec section 6).
"""

from __future__ import annotations

import math

import torch


def _kernel(u: torch.Tensor, v: torch.Tensor, cost: torch.Tensor, epsilon: float) -> torch.Tensor:
    """(B, M, N): (u_m + v_n - C_mn) / eps."""
    return (u.unsqueeze(2) + v.unsqueeze(1) - cost) / epsilon


def _logsumexp_kernel(u, v, cost, epsilon, dim, buffer=None):
    """`torch.logsumexp(_kernel(u, v, cost, epsilon), dim)`. With `buffer` (an empty (B, M, N) tensor; no autograd)
    the kernel is built in it and reduced in place: the operations of `torch.logsumexp` (max, with infinite
    maxima replaced by 0; exp of the difference; sum; log; plus the max) in the same order on the same values,
    so the same numbers to the bit, without allocating five (B, M, N) temporaries per call."""
    if buffer is None:
        return torch.logsumexp(_kernel(u, v, cost, epsilon), dim=dim)
    torch.add(u.unsqueeze(2), v.unsqueeze(1), out=buffer).sub_(cost).div_(epsilon)
    # a maximum is exact in any order; torch's CPU `max` reduces the middle dimension of a (B, M, N) tensor about
    # 4x faster than `amax`, which is the faster one over the last, short dimension
    maxes = buffer.max(dim, keepdim=True).values if dim == 1 else buffer.amax(dim, keepdim=True)
    maxes.masked_fill_(maxes.abs() == math.inf, 0)
    return buffer.sub_(maxes).exp_().sum(dim).log_().add_(maxes.squeeze(dim))


def _update_u(u, v, cost, log_mu, epsilon, buffer=None):
    """The first half of an iteration: u_t from (u_{t-1}, v_{t-1})."""
    return u + epsilon * (log_mu - _logsumexp_kernel(u, v, cost, epsilon, 2, buffer))


def _errors(u: torch.Tensor, u_prev: torch.Tensor, groups: int | None) -> torch.Tensor:
    """The stopping statistic of one iteration: mean |u - u_prev| over the batch (a scalar), or over each of
    `groups` equal groups of problems, (groups,)."""
    diff = (u - u_prev).abs()
    if groups is None:
        return diff.mean()
    if torch.compiler.is_compiling():
        return diff.view(groups, -1).mean(1)
    # eagerly, each group's mean is the reduction a batch of that group alone makes (the same numbers)
    size = diff.shape[0] // groups
    return torch.stack([diff[g * size : (g + 1) * size].mean() for g in range(groups)])


def _iterate(cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, history=None, keep_every=1, groups=None):
    """Run the iterations eagerly; return the potentials of the first converged iteration (of each group) and
    the iteration numbers: `(u, v, n_iter, group_iters)`, `group_iters` a list of `groups` ints (None without
    groups), `n_iter` the iterations run (their maximum).

    When `history` is a pair of lists `(us, vs)`, the source potentials of iterations 0, keep_every,
    2 keep_every, ... and the target potentials of every iteration (u_0 = v_0 = 0 first) are appended to
    them up to the returned iteration (the last group's).
    """
    batch, m, n = cost.shape
    u, v = cost.new_zeros(batch, m), cost.new_zeros(batch, n)
    if history is not None:
        history[0].append(u)
        history[1].append(v)
    fixed_count = tol <= 0 or torch.jit.is_tracing()  # no test: exactly max_iter iterations
    num_groups = 1 if groups is None else groups
    chosen: list[tuple[torch.Tensor, torch.Tensor, int] | None] = [None] * num_groups  # per group
    window: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (u, v, err) per iteration
    recorded = torch.is_grad_enabled() and cost.requires_grad or torch.jit.is_tracing()  # autograd sees the ops
    buffer = None
    if not recorded:  # the kernels of every iteration computed in place, in one contiguous (B, M, N) buffer, the
        # layout `torch.logsumexp(_kernel(...))` reduces (the model's costs come as a strided view; read once)
        cost = cost.contiguous()
        buffer = torch.empty(cost.shape, dtype=cost.dtype, device=cost.device)
    for it in range(1, max_iter + 1):
        u_prev = u
        u = _update_u(u, v, cost, log_mu, epsilon, buffer)
        v = v + epsilon * (log_nu - _logsumexp_kernel(u, v, cost, epsilon, 1, buffer))
        err = None if fixed_count else _errors(u, u_prev, groups)
        window.append((u, v, err))
        if it % check_every and it != max_iter:
            continue
        start = it - len(window) + 1  # the iteration of window[0]
        last = len(window) - 1  # the window's last iteration needed
        if not fixed_count:
            # the one host synchronisation of this window: which iterations converged, (W, groups)
            converged = (torch.stack([e.detach() for _, _, e in window]) < tol).view(len(window), -1).cpu()
            for g in range(num_groups):
                hits = converged[:, g].nonzero()
                if chosen[g] is None and (hits.numel() > 0 or it == max_iter):
                    first = int(hits[0, 0]) if hits.numel() > 0 else last
                    chosen[g] = (*window[first][:2], start + first)
            if all(c is not None for c in chosen):
                last = max(c[2] for c in chosen) - start
        if history is not None:
            for t, (wu, wv, _) in enumerate(window[: last + 1], start):
                if t % keep_every == 0:
                    history[0].append(wu)
                history[1].append(wv)
        if fixed_count and it == max_iter:
            return u, v, max_iter, None if groups is None else [max_iter] * groups
        if all(c is not None for c in chosen):
            break
        window.clear()
    n_iter = max(c[2] for c in chosen)
    if groups is None:
        return chosen[0][0], chosen[0][1], n_iter, None
    u = torch.stack([cu.view(groups, -1, m)[g] for g, (cu, _, _) in enumerate(chosen)]).view(batch, m)
    v = torch.stack([cv.view(groups, -1, n)[g] for g, (_, cv, _) in enumerate(chosen)]).view(batch, n)
    return u, v, n_iter, [c[2] for c in chosen]


def _iterate_compiled(cost, log_mu, log_nu, epsilon, max_iter, tol, groups=None):
    """`_iterate` for `torch.export`: the same iterations and stopping rule with no host
    synchronisation in the graph. A `while_loop` (one traced iteration, whatever `max_iter`) carries the
    potentials, and, per group, the potentials and the number of its first converged iteration; with
    `tol <= 0`, a plain loop of `max_iter` iterations. Returns `(u, v, n_iter)`, `n_iter` a 0-d tensor."""
    batch, m, n = cost.shape
    u, v = cost.new_zeros(batch, m), cost.new_zeros(batch, n)
    if tol <= 0:
        for _ in range(max_iter):
            u = _update_u(u, v, cost, log_mu, epsilon)
            v = v + epsilon * (log_nu - torch.logsumexp(_kernel(u, v, cost, epsilon), dim=1))
        return u, v, torch.tensor(max_iter)
    from torch._higher_order_ops import while_loop  # private in torch 2.x; imported only where traced

    num_groups = 1 if groups is None else groups

    def select(group_mask, a, b):  # per group: a where group_mask, else b; (B, L) potentials, (groups,) mask
        grouped = (num_groups, -1, a.shape[-1])
        return torch.where(group_mask.view(-1, 1, 1), a.view(grouped), b.view(grouped)).view(a.shape)

    def cond(it, u, v, final_u, final_v, done, group_iters):
        return (it < max_iter) & ~done.all()

    def body(it, u, v, final_u, final_v, done, group_iters):
        u_new = _update_u(u, v, cost, log_mu, epsilon)
        v_new = v + epsilon * (log_nu - torch.logsumexp(_kernel(u_new, v, cost, epsilon), dim=1))
        newly = ~done & (_errors(u_new, u, groups).view(num_groups) < tol)  # (groups,)
        return (
            it + 1,
            u_new,
            v_new,
            select(newly, u_new, final_u),
            select(newly, v_new, final_v),
            done | newly,
            torch.where(newly, it + 1, group_iters),
        )

    state = (
        torch.zeros((), dtype=torch.long, device=cost.device),
        u,
        v,
        u.clone(),
        v.clone(),
        torch.zeros(num_groups, dtype=torch.bool, device=cost.device),
        torch.zeros(num_groups, dtype=torch.long, device=cost.device),
    )
    it, u, v, final_u, final_v, done, group_iters = while_loop(cond, body, state)
    n_iter = torch.where(done, group_iters, it).amax()
    return select(done, final_u, u), select(done, final_v, v), n_iter


class _SinkhornLoopWithGrad(torch.autograd.Function):
    """`_iterate_compiled`'s loop with a gradient, for `torch.export` of a graph that differentiates Sinkhorn
    (`torch.compile` calls the opaque operator instead).

    torch's own autograd of `while_loop` (torch 2.13) gets the gradient of a tensor that every iteration reads
    (the cost here) wrong after more than two iterations, so the loop is run without autograd and differentiated
    by hand, as `_SinkhornRecompute` does eagerly: the forward pass is a `while_loop` that also stacks the
    potentials of every iteration it runs (torch's `while_loop_stack_output`, (iterations, B, M) and
    (iterations, B, N)); the backward pass is a `while_loop` that walks them back with the same two steps per
    iteration as `_SinkhornRecompute.backward`. Both graphs hold one iteration, whatever `max_iter` is. The
    stopping rule is `_iterate_compiled`'s (per group with `groups`; `tol <= 0`: exactly `max_iter`
    iterations). Returns `(plan, u, v, iteration numbers (iterations,))`.
    """

    @staticmethod
    def forward(ctx, cost, log_mu, log_nu, epsilon, max_iter, tol, groups):
        from torch._higher_order_ops.while_loop import while_loop_stack_output_op  # private, traced only

        batch, m, n = cost.shape
        num_groups = 1 if groups is None else groups

        def cond(it, u, v, done, cost, log_mu, log_nu):
            return (it < max_iter) & ~done.all()

        def body(it, u, v, done, cost, log_mu, log_nu):
            u_new = _update_u(u, v, cost, log_mu, epsilon)
            v_new = v + epsilon * (log_nu - torch.logsumexp(_kernel(u_new, v, cost, epsilon), dim=1))
            if tol > 0:
                done = done | (_errors(u_new, u, groups).view(num_groups) < tol)
            return it + 1, u_new, v_new, done.clone()

        state = (
            torch.zeros((), dtype=torch.long, device=cost.device),
            cost.new_zeros(batch, m),
            cost.new_zeros(batch, n),
            torch.zeros(num_groups, dtype=torch.bool, device=cost.device),
        )
        its, us, vs, dones = while_loop_stack_output_op(cond, body, state, (cost, log_mu, log_nu))
        # group g's plan is that of its first converged iteration (1-based), or of the last one run
        steps = us.shape[0]
        ends = torch.where(dones.any(0), dones.int().argmax(0), steps - 1)  # (groups,) indices into us
        group = torch.arange(num_groups, device=cost.device)
        u = us.view(steps, num_groups, -1, m)[ends, group].reshape(batch, m)
        v = vs.view(steps, num_groups, -1, n)[ends, group].reshape(batch, n)
        plan = torch.exp(_kernel(u, v, cost, epsilon))
        ctx.save_for_backward(cost, plan, us, vs, ends)
        ctx.epsilon = epsilon
        ctx.mark_non_differentiable(u, v, its)
        # the stacked iteration numbers are returned whole: their length is the loop's data-dependent size,
        # which a traced autograd.Function must return
        return plan, u, v, its

    @staticmethod
    def backward(ctx, grad_plan, _grad_u, _grad_v, _grad_its):
        from torch._higher_order_ops import while_loop  # private in torch 2.x; traced only

        cost, plan, us, vs, ends = ctx.saved_tensors
        epsilon = ctx.epsilon
        steps, num_groups = us.shape[0], ends.shape[0]
        # potentials before each iteration t = 1..steps: index t - 1 of these, after it: index t
        hist_u = torch.cat([torch.zeros_like(us[:1]), us])
        hist_v = torch.cat([torch.zeros_like(vs[:1]), vs])
        scaled_cost = cost / epsilon
        ends = (ends + 1).repeat_interleave(cost.shape[0] // num_groups).unsqueeze(1)  # (B, 1) iterations

        def softmax_kernel(u, v, dim):
            return torch.softmax((u / epsilon).unsqueeze(2) + (v / epsilon).unsqueeze(1) - scaled_cost, dim=dim)

        grad_z = grad_plan * plan
        end_grad_u, end_grad_v = grad_z.sum(2) / epsilon, grad_z.sum(1) / epsilon

        def cond(t, grad_u, grad_v, grad_cost):
            return t > 0

        def body(t, grad_u, grad_v, grad_cost):
            # the gradient of the problems whose plan is iteration t's enters here (zero before, going back)
            grad_u = torch.where(ends == t, end_grad_u, grad_u)
            grad_v = torch.where(ends == t, end_grad_v, grad_v)
            u_t = hist_u.index_select(0, t.view(1)).squeeze(0)
            u_prev = hist_u.index_select(0, (t - 1).view(1)).squeeze(0)
            v_prev = hist_v.index_select(0, (t - 1).view(1)).squeeze(0)
            weighted = softmax_kernel(u_t, v_prev, 1) * grad_v.unsqueeze(1)
            grad_u = grad_u - weighted.sum(2)
            grad_cost = grad_cost + weighted
            weighted = softmax_kernel(u_prev, v_prev, 2) * grad_u.unsqueeze(2)
            return t - 1, torch.zeros_like(grad_u), -weighted.sum(1), grad_cost + weighted

        start = torch.full((), steps, dtype=torch.long, device=cost.device)
        state = (start, torch.zeros_like(end_grad_u), torch.zeros_like(end_grad_v), grad_z / -epsilon)
        grad_cost = while_loop(cond, body, state)[3]
        return grad_cost, None, None, None, None, None, None


def _recompute_backward(grad_plan, cost, plan, log_mu, u_kept, vs, epsilon, keep_every, n_iter, group_iters):
    """d loss / d cost of `_SinkhornRecompute`: the unrolled iterations walked back from the plan's (see its
    docstring). `u_kept`: the source potentials of iterations 0, keep_every, ...; `vs`: the target potentials
    of every iteration (lists or stacked tensors); `group_iters`: each group's iteration, or None."""
    scaled_cost = cost / epsilon

    def softmax_kernel(u, v, dim):  # softmax over `dim` of (u_m + v_n - C_mn) / eps
        return torch.softmax((u / epsilon).unsqueeze(2) + (v / epsilon).unsqueeze(1) - scaled_cost, dim=dim)

    grad_z = grad_plan * plan  # through T = exp(Z), Z = (u + v - C) / eps
    grad_u = grad_z.sum(2) / epsilon
    grad_v = grad_z.sum(1) / epsilon
    grad_cost = grad_z.div_(-epsilon)
    inject = None
    if group_iters is not None:
        # group g's plan comes from its iteration n_g: its gradient enters there (zero before, going back)
        ends = torch.tensor(group_iters, device=cost.device)
        ends = ends.repeat_interleave(cost.shape[0] // len(group_iters)).unsqueeze(1)  # (B, 1)
        end_grads = (grad_u, grad_v)

        def inject(t, grad_u, grad_v):  # add the gradient of the problems whose plan is iteration t's
            return torch.where(ends == t, end_grads[0], grad_u), torch.where(ends == t, end_grads[1], grad_v)

        zero_u, zero_v = torch.zeros_like(grad_u), torch.zeros_like(grad_v)
        grad_u, grad_v = inject(n_iter, zero_u, zero_v)
    for first in reversed(range(0, n_iter, keep_every)):  # segments first .. last
        last = min(first + keep_every, n_iter)
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
            if inject is not None:
                grad_u, grad_v = inject(t - 1, grad_u, grad_v)
    return grad_cost


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
    def forward(ctx, cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, keep_every, groups):
        history: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        u, v, n_iter, group_iters = _iterate(
            cost, log_mu, log_nu, epsilon, max_iter, tol, check_every, history, keep_every, groups
        )
        plan = torch.exp(_kernel(u, v, cost, epsilon))
        ctx.save_for_backward(cost, plan, log_mu)
        ctx.history, ctx.epsilon, ctx.keep_every, ctx.n_iter = history, epsilon, keep_every, n_iter
        ctx.group_iters = group_iters
        ctx.mark_non_differentiable(u, v)
        return plan, u, v, torch.tensor(n_iter)

    @staticmethod
    def backward(ctx, grad_plan, _grad_u, _grad_v, _grad_n):
        cost, plan, log_mu = ctx.saved_tensors
        grad_cost = _recompute_backward(
            grad_plan, cost, plan, log_mu, *ctx.history, ctx.epsilon, ctx.keep_every, ctx.n_iter,
            ctx.group_iters,
        )
        return grad_cost, None, None, None, None, None, None, None, None
