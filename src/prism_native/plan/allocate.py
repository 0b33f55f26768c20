"""Budgeted type allocation: which quant type each tensor class, and a few single tensors, get.

The problem is a multiple-choice knapsack. Each group g is a tensor class such as ffn_down or
token_embd. Choosing the requested type t for g costs C[g,t] bytes: the sum of what llama-quantize
writes for each of its tensors, with shape fallbacks included. It also adds D[g,t] distortion. We
minimise sum D subject to sum C <= budget. The caller prices every (tensor, type) pair, so a
fallback (Q4_K on 576-wide rows writes Q5_0) is costed and scored as what really lands in the file.

1. Lagrangian relaxation. Take the lower convex hull of each group's (C, D) points. The
   multiplier lambda is bisected over the hull breakpoints. This gives a feasible assignment, an
   upper bound, and lambda*: for any set of remaining groups R and remaining budget B',
   sum_R min_t(D + lambda* C) - lambda* B' is a lower bound on their best distortion.
2. Exact finish by dynamic programming over groups on Pareto fronts of partial (cost, distortion)
   sums. A partial sum is dropped when:
   - another partial sum is no costlier and no worse (dominance);
   - even the cheapest completion overshoots the budget;
   - its Lagrangian lower bound exceeds the best known total (bound).
   Each rule keeps at least one optimal completion, so the result is optimal.
3. Per-tensor refinement. A greedy exchange moves single tensors one type step away from their
   class's type, or swaps two such moves. A move is taken only if it lowers total distortion and
   stays within the budget, and the number of moved tensors is capped. The Lagrangian solved with
   every tensor as its own group, finished exactly as in 2 while the partial sums stay few, is the
   other contender; the lower distortion within the cap wins.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import BudgetError

Formatter = Callable[[int], str]


def _fmt_bytes(n: int) -> str:
    return f"{n} bytes"


@dataclass(frozen=True)
class TensorCost:
    """One tensor's price list: requested type -> bytes written, and -> distortion at the effective type."""

    name: str
    cost: Mapping[str, int]
    distortion: Mapping[str, float]


@dataclass(frozen=True)
class Group:
    """A tensor class that gets one type. `candidates` are requested types, in any order."""

    name: str
    tensors: tuple[TensorCost, ...]
    candidates: tuple[str, ...]

    def cost(self, t: str) -> int:
        return sum(int(x.cost[t]) for x in self.tensors)

    def distortion(self, t: str) -> float:
        return math.fsum(float(x.distortion[t]) for x in self.tensors)


@dataclass(frozen=True)
class Allocation:
    group_types: dict[str, str]      # group -> requested type
    tensor_types: dict[str, str]     # every tensor -> requested type (overrides included)
    overrides: dict[str, str]        # tensors whose type differs from their group's
    total_bytes: int
    total_distortion: float
    class_distortion: float          # optimum at class granularity, before per-tensor refinement
    budget: int
    multiplier: float                # lambda* of the Lagrangian relaxation (distortion per byte)


# ---------------------------------------------------------------------------------------------
# validation and per-group option tables


@dataclass(frozen=True)
class _Options:
    """A group's non-dominated candidates, sorted by cost ascending (distortion strictly descending)."""

    types: tuple[str, ...]
    cost: np.ndarray      # int64
    dist: np.ndarray      # float64


def _validate(groups: Sequence[Group]) -> None:
    if not groups:
        raise ValueError("allocate: no groups")
    seen_groups: set[str] = set()
    seen_tensors: set[str] = set()
    for g in groups:
        if g.name in seen_groups:
            raise ValueError(f"allocate: duplicate group {g.name!r}")
        seen_groups.add(g.name)
        if not g.candidates:
            raise ValueError(f"allocate: group {g.name!r} has no candidate types")
        if len(set(g.candidates)) != len(g.candidates):
            raise ValueError(f"allocate: group {g.name!r} lists a candidate twice")
        if not g.tensors:
            raise ValueError(f"allocate: group {g.name!r} has no tensors")
        for t in g.tensors:
            if t.name in seen_tensors:
                raise ValueError(f"allocate: tensor {t.name!r} is in two groups")
            seen_tensors.add(t.name)
            for c in g.candidates:
                if c not in t.cost or c not in t.distortion:
                    raise ValueError(f"allocate: tensor {t.name!r} has no price for {c}")
                if int(t.cost[c]) < 0 or not math.isfinite(float(t.distortion[c])):
                    raise ValueError(f"allocate: tensor {t.name!r} has a bad price for {c}")


def _pareto(types: Sequence[str], cost: Sequence[int], dist: Sequence[float]) -> _Options:
    order = sorted(range(len(types)), key=lambda i: (cost[i], dist[i]))
    keep: list[int] = []
    for i in order:
        if not keep or dist[i] < dist[keep[-1]]:
            keep.append(i)
    return _Options(tuple(types[i] for i in keep),
                    np.array([cost[i] for i in keep], dtype=np.int64),
                    np.array([dist[i] for i in keep], dtype=np.float64))


def _group_options(g: Group) -> _Options:
    return _pareto(g.candidates, [g.cost(t) for t in g.candidates], [g.distortion(t) for t in g.candidates])


def cost_range(groups: Sequence[Group]) -> tuple[int, int]:
    """Bytes of the cheapest and of the most expensive class-level assignment."""
    _validate(groups)
    costs = [[g.cost(t) for t in g.candidates] for g in groups]
    return sum(min(c) for c in costs), sum(max(c) for c in costs)


def _check_budget(groups: Sequence[Group], budget: int, fmt: Formatter) -> None:
    lo, hi = cost_range(groups)
    if lo <= budget <= hi:
        return
    side = "below the cheapest" if budget < lo else "above the most expensive"
    raise BudgetError(f"budget {fmt(budget)} is {side} assignment of the candidate types; "
                     f"feasible range is {fmt(lo)} .. {fmt(hi)}")


# ---------------------------------------------------------------------------------------------
# step 1: Lagrangian relaxation


@dataclass(frozen=True)
class _Hull:
    """Indices into _Options of the lower convex hull, and the slope after each hull point."""

    idx: np.ndarray       # hull point -> option index
    slope: np.ndarray     # slope[k] = distortion saved per extra byte from hull point k to k+1


def _lower_hull(o: _Options) -> _Hull:
    pts: list[int] = []
    for i in range(len(o.types)):
        # pop the last point while it lies on or above the chord from its predecessor to i
        while len(pts) >= 2:
            a, b = pts[-2], pts[-1]
            cross = (float(o.cost[b] - o.cost[a]) * (o.dist[i] - o.dist[a])
                     - float(o.cost[i] - o.cost[a]) * (o.dist[b] - o.dist[a]))
            if cross <= 0.0:
                pts.pop()
            else:
                break
        pts.append(i)
    idx = np.array(pts, dtype=np.int64)
    slope = (o.dist[idx[:-1]] - o.dist[idx[1:]]) / (o.cost[idx[1:]] - o.cost[idx[:-1]]).astype(np.float64)
    return _Hull(idx, slope)


def _lagrange_choice(hulls: Sequence[_Hull], lam: float) -> list[int]:
    """Option index per group minimising D + lam*C; ties go to the cheaper option."""
    return [int(h.idx[int(np.count_nonzero(h.slope > lam))]) for h in hulls]


def _lagrangian(opts: Sequence[_Options], budget: int) -> tuple[list[int], float]:
    """Bisection over the sorted hull breakpoints for the smallest feasible multiplier."""
    hulls = [_lower_hull(o) for o in opts]

    def cost(choice: list[int]) -> int:
        return sum(int(o.cost[i]) for o, i in zip(opts, choice))

    lams = np.unique(np.concatenate([np.zeros(1)] + [h.slope for h in hulls]))
    lo, hi = 0, len(lams) - 1          # cost(lams[hi]) is the cheapest hull assignment: feasible
    if cost(_lagrange_choice(hulls, float(lams[lo]))) <= budget:
        hi = lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cost(_lagrange_choice(hulls, float(lams[mid]))) <= budget:
            hi = mid
        else:
            lo = mid
    lam = float(lams[hi])
    return _lagrange_choice(hulls, lam), lam


# partial sums the tensor-level exact finish may keep over all its stages (16 bytes of back-pointers each):
# under a second for thousands of tensors; the optimum on the zoo and SmolLM2-135M (29-211 tensors)
TENSOR_DP_STATES = 1_000_000


def _greedy_fill(opts: Sequence[_Options], choice: list[int], budget: int) -> list[int]:
    """Spend leftover bytes on the single-group change that saves the most distortion (a tighter bound)."""
    choice = list(choice)
    spent = sum(int(o.cost[i]) for o, i in zip(opts, choice))
    while True:
        best = (0.0, -1, -1)
        for g, (o, i) in enumerate(zip(opts, choice)):
            fits = o.cost - o.cost[i] <= budget - spent
            gain = np.where(fits, o.dist[i] - o.dist, 0.0)
            j = int(np.argmax(gain))
            if gain[j] > best[0]:
                best = (float(gain[j]), g, j)
        if best[1] < 0:
            return choice
        g, j = best[1], best[2]
        spent += int(opts[g].cost[j] - opts[g].cost[choice[g]])
        choice[g] = j


# ---------------------------------------------------------------------------------------------
# step 2: exact finish


def _exact(opts: Sequence[_Options], budget: int, lam: float, incumbent: list[int],
           max_states: int | None = None) -> list[int]:
    """The optimum, or `incumbent` once the stages have kept more than `max_states` partial sums in all
    (None: no limit; the work and the memory of the back-pointers grow with that sum)."""
    n = len(opts)
    ub = math.fsum(float(o.dist[i]) for o, i in zip(opts, incumbent))
    tol = 1e-9 * max(1.0, abs(ub))
    # cheapest cost and Lagrangian value of the groups after stage k
    min_rest = np.zeros(n + 1, dtype=np.int64)
    h_rest = np.zeros(n + 1)
    for k in range(n - 1, -1, -1):
        min_rest[k] = min_rest[k + 1] + int(opts[k].cost.min())
        h_rest[k] = h_rest[k + 1] + float((opts[k].dist + lam * opts[k].cost).min())

    cost = np.zeros(1, dtype=np.int64)
    dist = np.zeros(1)
    parents: list[np.ndarray] = []
    picks: list[np.ndarray] = []
    kept = 0
    for k, o in enumerate(opts):
        m = len(o.types)
        c = (cost[:, None] + o.cost[None, :]).ravel()
        d = (dist[:, None] + o.dist[None, :]).ravel()
        parent = np.repeat(np.arange(len(cost)), m)
        pick = np.tile(np.arange(m), len(cost))
        ok = c + min_rest[k + 1] <= budget
        ok &= d + h_rest[k + 1] - lam * (budget - c).astype(np.float64) <= ub + tol
        c, d, parent, pick = c[ok], d[ok], parent[ok], pick[ok]
        order = np.lexsort((d, c))
        c, d, parent, pick = c[order], d[order], parent[order], pick[order]
        if len(d):
            best_before = np.minimum.accumulate(d)
            keep = np.ones(len(d), dtype=bool)
            keep[1:] = d[1:] < best_before[:-1]
            c, d, parent, pick = c[keep], d[keep], parent[keep], pick[keep]
        if not len(d):
            return incumbent      # only possible through rounding; the incumbent is then optimal
        kept += len(d)
        if max_states is not None and kept > max_states:
            return incumbent
        cost, dist = c, d
        parents.append(parent)
        picks.append(pick)

    at = int(np.argmin(dist))
    if dist[at] > ub:
        return incumbent
    choice = [0] * n
    for k in range(n - 1, -1, -1):
        choice[k] = int(picks[k][at])
        at = int(parents[k][at])
    return choice


def allocate_classes(groups: Sequence[Group], budget: int, *, fmt: Formatter = _fmt_bytes) -> Allocation:
    """Optimal type per group: minimum total distortion with total bytes <= budget."""
    _validate(groups)
    _check_budget(groups, budget, fmt)
    opts = [_group_options(g) for g in groups]
    choice, lam = _lagrangian(opts, budget)
    choice = _exact(opts, budget, lam, _greedy_fill(opts, choice, budget))
    group_types = {g.name: o.types[i] for g, o, i in zip(groups, opts, choice)}
    tensor_types = {t.name: group_types[g.name] for g in groups for t in g.tensors}
    total = sum(int(o.cost[i]) for o, i in zip(opts, choice))
    dist = math.fsum(float(o.dist[i]) for o, i in zip(opts, choice))
    return Allocation(group_types, tensor_types, {}, total, dist, dist, budget, lam)


# ---------------------------------------------------------------------------------------------
# step 3: per-tensor refinement


@dataclass(frozen=True)
class _Move:
    tensor: int       # index into the flat tensor list
    to: str
    dc: int
    dd: float


def _steps(order: Sequence[str], t: TensorCost, ti: int, current: str) -> list[_Move]:
    """The nearest cheaper and dearer candidate for this tensor, in the group's type order.

    Candidates that cost this tensor the same as the current type (a fallback landing on the same
    effective type) are skipped: they are not a step.
    """
    pos = order.index(current)
    c0, d0 = int(t.cost[current]), float(t.distortion[current])
    moves: list[_Move] = []
    for direction in (-1, 1):
        j = pos + direction
        while 0 <= j < len(order) and int(t.cost[order[j]]) == c0:
            j += direction
        if 0 <= j < len(order):
            to = order[j]
            moves.append(_Move(ti, to, int(t.cost[to]) - c0, float(t.distortion[to]) - d0))
    return moves


def _best_exchange(dc: np.ndarray, dd: np.ndarray, owner: np.ndarray, spare: int, min_gain: float,
                   pairs: bool) -> tuple[int, ...]:
    """Indices of the move(s) saving the most distortion per moved tensor within `spare` bytes.

    Pairs are one cheaper move and one dearer move of two different tensors. Two dearer moves that
    fit together are also found as two singles in successive rounds.
    """
    best_rate, best = 0.0, ()
    single = (dc <= spare) & (dd < -min_gain)
    if single.any():
        i = int(np.argmin(np.where(single, dd, np.inf)))
        best_rate, best = -float(dd[i]), (i,)
    down, up = np.flatnonzero(dc < 0), np.flatnonzero(dc > 0)
    if pairs and len(down) and len(up):
        pd = dd[down][:, None] + dd[up][None, :]
        ok = ((dc[down][:, None] + dc[up][None, :] <= spare) & (pd < -min_gain)
              & (owner[down][:, None] != owner[up][None, :]))
        if ok.any():
            a, b = divmod(int(np.argmin(np.where(ok, pd, np.inf))), len(up))
            if -float(pd[a, b]) / 2.0 > best_rate:
                best = (int(down[a]), int(up[b]))
    return best


def refine_tensors(groups: Sequence[Group], alloc: Allocation, *, max_overrides: int,
                   min_gain: float = 0.0) -> Allocation:
    """Give up to `max_overrides` single tensors their own type, one step from their class's.

    Each round takes the best feasible exchange, scored as distortion saved per tensor moved:
    - a single move that lowers distortion and fits the spare bytes;
    - or a pair, typically one tensor down and another up, whose net cost fits and whose net
      distortion drops by more than `min_gain`.
    A moved tensor is not moved again, so each override is exactly one step from its class's type.
    Overrides already in `alloc` are kept and count towards the cap.
    """
    _validate(groups)
    flat = [(g, t) for g in groups for t in g.tensors]
    moves: list[_Move] = []
    ti = 0
    for g in groups:
        order = sorted(g.candidates, key=lambda c: (g.cost(c), g.distortion(c), c))
        for t in g.tensors:
            moves.extend(_steps(order, t, ti, alloc.group_types[g.name]))
            ti += 1
    types = [alloc.tensor_types[t.name] for _, t in flat]
    spare = alloc.budget - alloc.total_bytes
    move_owner = np.array([m.tensor for m in moves], dtype=np.int64)
    move_dc = np.array([m.dc for m in moves], dtype=np.int64)
    move_dd = np.array([m.dd for m in moves])
    live = np.array([flat[m.tensor][1].name not in alloc.overrides for m in moves], dtype=bool)
    n_moved = len(alloc.overrides)
    while n_moved < max_overrides and live.any():
        idx = np.flatnonzero(live)
        best = _best_exchange(move_dc[idx], move_dd[idx], move_owner[idx], spare, min_gain,
                              pairs=n_moved + 2 <= max_overrides)
        if not best:
            break
        for k in best:
            m = moves[int(idx[k])]
            types[m.tensor] = m.to
            spare -= m.dc
            live &= move_owner != m.tensor
            n_moved += 1

    tensor_types = {t.name: ty for (_, t), ty in zip(flat, types)}
    overrides = {t.name: ty for (g, t), ty in zip(flat, types) if ty != alloc.group_types[g.name]}
    total = sum(int(t.cost[ty]) for (_, t), ty in zip(flat, types))
    dist = math.fsum(float(t.distortion[ty]) for (_, t), ty in zip(flat, types))
    return replace(alloc, tensor_types=tensor_types, overrides=overrides, total_bytes=total,
                   total_distortion=dist)


def allocate_tensors(groups: Sequence[Group], alloc: Allocation, *, max_overrides: int) -> Allocation | None:
    """The Lagrangian at tensor granularity (every tensor its own group), greedy fill, then the exact finish
    while it stays within TENSOR_DP_STATES (beyond it, with thousands of tensors, the fill is within a
    hair of the optimum: the leftover bytes are a small share of any one tensor's step).

    Refinement moves a tensor one type step from its class's; this finds mixes several steps apart
    (a class whose tensors are best split between Q4_K and Q6_K, as in a requantized Q4_K_M file).
    Returned only when it beats `alloc` and needs at most `max_overrides` deviating tensors (the fill's
    answer stands in for the optimum when only it keeps within that cap)."""
    singles = [Group(t.name, (t,), g.candidates) for g in groups for t in g.tensors]
    opts = [_group_options(x) for x in singles]
    if sum(int(o.cost.min()) for o in opts) > alloc.budget:
        return None
    choice, lam = _lagrangian(opts, alloc.budget)
    fill = _greedy_fill(opts, choice, alloc.budget)
    best = _exact(opts, alloc.budget, lam, fill, max_states=TENSOR_DP_STATES)
    found = [a for a in (_tensor_allocation(groups, singles, opts, c, alloc, max_overrides)
                         for c in ([best, fill] if best != fill else [best])) if a is not None]
    return min(found, key=lambda a: a.total_distortion) if found else None


def _tensor_allocation(groups: Sequence[Group], singles: Sequence[Group], opts: Sequence[_Options], choice: list[int],
                       alloc: Allocation, max_overrides: int) -> Allocation | None:
    """A per-tensor choice as an Allocation (each class's most common type, the rest overrides), or None
    when it needs more than `max_overrides` overrides, overshoots, or does not beat `alloc`."""
    tensor_types = {x.name: o.types[i] for x, o, i in zip(singles, opts, choice)}
    group_types: dict[str, str] = {}
    overrides: dict[str, str] = {}
    for g in groups:
        counts: dict[str, int] = {}
        for t in g.tensors:
            counts[tensor_types[t.name]] = counts.get(tensor_types[t.name], 0) + 1
        main = max(counts, key=lambda ty: (counts[ty], -g.candidates.index(ty)))
        group_types[g.name] = main
        overrides.update({t.name: tensor_types[t.name] for t in g.tensors if tensor_types[t.name] != main})
    total = sum(int(o.cost[i]) for o, i in zip(opts, choice))
    dist = math.fsum(float(o.dist[i]) for o, i in zip(opts, choice))
    if len(overrides) > max_overrides or total > alloc.budget or \
            dist >= alloc.total_distortion - 1e-12 * max(1.0, abs(alloc.total_distortion)):
        return None
    return replace(alloc, group_types=group_types, tensor_types=tensor_types, overrides=overrides,
                   total_bytes=total, total_distortion=dist)


def allocate(groups: Sequence[Group], budget: int, *, max_overrides: int = 0, min_gain: float = 0.0,
             fmt: Formatter = _fmt_bytes) -> Allocation:
    """Class-level optimum under `budget` bytes, then up to `max_overrides` per-tensor exchanges,
    or the tensor-level Lagrangian solution when it is better within the same override cap."""
    alloc = allocate_classes(groups, budget, fmt=fmt)
    if max_overrides <= 0:
        return alloc
    refined = refine_tensors(groups, alloc, max_overrides=max_overrides, min_gain=min_gain)
    return allocate_tensors(groups, refined, max_overrides=max_overrides) or refined
