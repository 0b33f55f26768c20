"""Allocator: exact multiple-choice knapsack (checked against brute force and an integer DP),
Lagrangian bisection, budget errors and the per-tensor greedy exchange."""
from __future__ import annotations

import itertools
import math
import random
import time

import numpy as np
import pytest

from prism_native.errors import PrismError
from prism_native.plan.allocate import (Allocation, Group, TensorCost, _group_options, _lagrange_choice, _lagrangian,
                                        _lower_hull, allocate, allocate_classes, cost_range, refine_tensors)


def _group(name: str, prices: dict[str, tuple[int, float]], n_tensors: int = 1) -> Group:
    """A group whose price is split evenly over `n_tensors` tensors (costs stay integral)."""
    tensors = []
    for k in range(n_tensors):
        cost = {t: c // n_tensors + (c % n_tensors if k == 0 else 0) for t, (c, _) in prices.items()}
        dist = {t: d / n_tensors for t, (_, d) in prices.items()}
        tensors.append(TensorCost(f"{name}.{k}", cost, dist))
    return Group(name, tuple(tensors), tuple(prices))


def _random_instance(rng: random.Random, n_groups: int, small_costs: bool) -> list[Group]:
    groups = []
    for g in range(n_groups):
        m = rng.randint(2, 8)
        prices = {}
        for t in range(m):
            c = rng.randint(1, 40) if small_costs else rng.randint(1_000, 5_000_000)
            if rng.random() < 0.15 and prices:          # fallback twin: same price as another type
                c, d = prices[rng.choice(list(prices))]
            else:
                d = rng.choice([rng.random() * 10, float(rng.randint(0, 5))])   # ties on purpose
            prices[f"T{t}"] = (c, d)
        groups.append(_group(f"g{g}", prices, n_tensors=rng.randint(1, 3)))
    return groups


def _brute_force(groups: list[Group], budget: int) -> float:
    best = math.inf
    tables = [[(g.cost(t), g.distortion(t)) for t in g.candidates] for g in groups]
    for combo in itertools.product(*tables):
        if sum(c for c, _ in combo) <= budget:
            best = min(best, math.fsum(d for _, d in combo))
    return best


def _integer_dp(groups: list[Group], budget: int) -> float:
    """Exact reference for small integer costs: best distortion per exact spent amount."""
    best = np.full(budget + 1, np.inf)
    best[0] = 0.0
    for g in groups:
        nxt = np.full(budget + 1, np.inf)
        for t in g.candidates:
            c, d = g.cost(t), g.distortion(t)
            if c <= budget:
                nxt[c:] = np.minimum(nxt[c:], best[:budget + 1 - c] + d)
        best = nxt
    return float(best.min())


def _check_answer(groups: list[Group], budget: int, a: Allocation, ref: float) -> None:
    assert a.total_bytes <= budget
    assert a.total_bytes == sum(g.cost(a.group_types[g.name]) for g in groups)
    assert a.total_distortion == pytest.approx(ref, rel=1e-9, abs=1e-9)


def test_exact_matches_brute_force_on_random_instances():
    rng = random.Random(1234)
    checked = 0
    while checked < 300:
        groups = _random_instance(rng, rng.randint(2, 7), small_costs=rng.random() < 0.5)
        if math.prod(len(g.candidates) for g in groups) > 40_000:
            continue
        lo, hi = cost_range(groups)
        budget = rng.randint(lo, hi)
        _check_answer(groups, budget, allocate_classes(groups, budget), _brute_force(groups, budget))
        checked += 1


def _cases(seed: int, n: int, max_groups: int, small_costs: bool):
    rng = random.Random(seed)
    for _ in range(n):
        groups = _random_instance(rng, rng.randint(2, max_groups), small_costs=small_costs)
        lo, hi = cost_range(groups)
        yield groups, rng.randint(lo, hi), (lo, hi)


def test_exact_matches_integer_dp_up_to_20_groups():
    for groups, budget, _ in _cases(99, 200, 20, small_costs=True):
        _check_answer(groups, budget, allocate_classes(groups, budget), _integer_dp(groups, budget))


def test_budget_edges_are_feasible():
    for groups, _, edges in _cases(7, 50, 6, small_costs=True):
        for budget in edges:
            _check_answer(groups, budget, allocate_classes(groups, budget), _integer_dp(groups, budget))


def test_lagrangian_bisection_finds_smallest_feasible_multiplier_and_a_lower_bound():
    for groups, budget, _ in _cases(5, 100, 12, small_costs=False):
        opts = [_group_options(g) for g in groups]
        hulls = [_lower_hull(o) for o in opts]
        choice, lam = _lagrangian(opts, budget)
        cost = lambda ch: sum(int(o.cost[i]) for o, i in zip(opts, ch))  # noqa: E731
        assert cost(choice) <= budget and lam >= 0.0
        if lam > 0.0:
            assert cost(_lagrange_choice(hulls, float(np.nextafter(lam, 0.0)))) > budget
        dual = sum(float((o.dist + lam * o.cost).min()) for o in opts) - lam * budget
        assert dual <= allocate_classes(groups, budget).total_distortion + 1e-9


def test_convex_instance_lagrangian_already_optimal():
    # three identical convex groups: the multiplier alone decides
    prices = {"Q3_K": (110, 9.0), "Q4_K": (144, 4.0), "Q5_K": (176, 2.0), "Q6_K": (210, 1.5)}
    groups = [_group(f"g{i}", prices) for i in range(3)]
    a = allocate_classes(groups, 144 * 3)
    assert set(a.group_types.values()) == {"Q4_K"}
    assert a.multiplier > 0


def test_realistic_size_is_fast():
    rng = random.Random(3)
    groups = _random_instance(rng, 40, small_costs=False)
    lo, hi = cost_range(groups)
    t0 = time.perf_counter()
    a = allocate_classes(groups, (lo + hi) // 2)
    assert time.perf_counter() - t0 < 5.0
    assert a.total_bytes <= (lo + hi) // 2


def test_infeasible_budget_names_range_in_caller_units():
    groups = [_group("ffn_down", {"Q4_K": (1000, 2.0), "Q8_0": (2000, 0.5)})]
    fmt = lambda b: f"{b * 8 / 1000:.2f} bpw"  # noqa: E731
    with pytest.raises(PrismError, match=r"below the cheapest.*8\.00 bpw \.\. 16\.00 bpw"):
        allocate(groups, 999, fmt=fmt)
    with pytest.raises(PrismError, match=r"above the most expensive.*feasible range is 1000 bytes \.\. 2000 bytes"):
        allocate(groups, 2001)


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="no price"):
        allocate([Group("a", (TensorCost("x", {"Q4_K": 1}, {"Q4_K": 1.0}),), ("Q4_K", "Q8_0"))], 1)
    g = _group("a", {"Q4_K": (1, 1.0)})
    with pytest.raises(ValueError, match="duplicate group"):
        allocate([g, g], 2)


def test_fallback_twins_price_identically():
    # Q4_K on 576-wide rows writes Q5_0: same bytes, same error as asking for Q5_0
    t = TensorCost("blk.0.ffn_down.weight", {"Q4_K": 22, "Q5_0": 22, "Q8_0": 34},
                   {"Q4_K": 1.0, "Q5_0": 1.0, "Q8_0": 0.1})
    a = allocate([Group("ffn_down", (t,), ("Q4_K", "Q5_0", "Q8_0"))], 30)
    assert a.total_bytes == 22 and a.group_types["ffn_down"] in ("Q4_K", "Q5_0")


def test_tied_embedding_group_single_tensor():
    emb = TensorCost("token_embd.weight", {"Q6_K": 210, "Q8_0": 272}, {"Q6_K": 3.0, "Q8_0": 2.0})
    ffn = TensorCost("blk.0.ffn_up.weight", {"Q4_K": 144, "Q6_K": 210}, {"Q4_K": 2.0, "Q6_K": 0.5})
    groups = [Group("token_embd", (emb,), ("Q6_K", "Q8_0")), Group("ffn_up", (ffn,), ("Q4_K", "Q6_K"))]
    a = allocate(groups, 420)
    assert a.group_types == {"token_embd": "Q6_K", "ffn_up": "Q6_K"}


# ---------------------------------------------------------------------------------------------
# per-tensor refinement

ORDER = ("Q3_K", "Q4_K", "Q5_K", "Q6_K")
BYTES = {"Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
ERR = {"Q3_K": 8.0, "Q4_K": 4.0, "Q5_K": 2.0, "Q6_K": 1.0}


def _layer_group(name: str, sens: list[float]) -> Group:
    return Group(name, tuple(TensorCost(f"blk.{i}.{name}.weight", dict(BYTES),
                                        {t: s * ERR[t] for t in ORDER}) for i, s in enumerate(sens)), ORDER)


def test_refinement_swaps_one_down_one_up_within_budget():
    g = _layer_group("ffn_down", [10.0, 1.0, 1.0, 0.1])
    budget = 4 * BYTES["Q4_K"]
    base = allocate_classes([g], budget)
    assert base.group_types == {"ffn_down": "Q4_K"}
    a = refine_tensors([g], base, max_overrides=2)
    assert a.overrides == {"blk.0.ffn_down.weight": "Q5_K", "blk.3.ffn_down.weight": "Q3_K"}
    assert a.total_bytes <= budget
    assert a.total_distortion < base.total_distortion
    assert a.class_distortion == base.total_distortion
    again = refine_tensors([g], a, max_overrides=2)       # already at the cap: unchanged
    assert again.overrides == a.overrides and again.total_bytes == a.total_bytes


def test_refinement_respects_cap_and_is_one_step():
    g = _layer_group("ffn_down", [50.0, 1.0, 1.0, 1.0, 0.01, 0.01])
    budget = 6 * BYTES["Q4_K"] + 10
    base = allocate_classes([g], budget)
    for cap in range(0, 6):
        a = allocate([g], budget, max_overrides=cap)
        assert len(a.overrides) <= cap
        assert a.total_bytes <= budget
        r = refine_tensors([g], base, max_overrides=cap)
        assert len(r.overrides) <= cap and a.total_distortion <= r.total_distortion + 1e-12
        for name, t in r.overrides.items():
            assert abs(ORDER.index(t) - ORDER.index("Q4_K")) == 1


def test_refinement_spends_spare_bytes_on_single_upgrade():
    g = _layer_group("attn_v", [1.0, 5.0])
    budget = 2 * BYTES["Q4_K"] + 40        # 40 spare: one Q4_K -> Q5_K step costs 32
    a = refine_tensors([g], allocate_classes([g], budget), max_overrides=1)
    assert a.group_types == {"attn_v": "Q4_K"}
    assert a.overrides == {"blk.1.attn_v.weight": "Q5_K"}


def test_refinement_step_skips_fallback_twins():
    # 576-wide rows: Q4_K writes Q5_0, so one step up from Q4_K is Q5_K, not the identical Q5_0
    prices = {"Q4_K": 22, "Q5_0": 22, "Q5_K": 24}
    t0 = TensorCost("blk.0.ffn_up.weight", prices, {"Q4_K": 5.0, "Q5_0": 5.0, "Q5_K": 1.0})
    t1 = TensorCost("blk.1.ffn_up.weight", prices, {"Q4_K": 1.0, "Q5_0": 1.0, "Q5_K": 0.9})
    g = Group("ffn_up", (t0, t1), ("Q4_K", "Q5_0", "Q5_K"))
    a = allocate([g], 46, max_overrides=1)
    assert a.overrides == {"blk.0.ffn_up.weight": "Q5_K"} and a.total_bytes == 46


def _random_layers(rng: random.Random) -> tuple[list[Group], int]:
    """1-4 classes of 1-6 tensors with log-normal sensitivities, and a feasible budget."""
    groups = [_layer_group(f"c{k}", [rng.lognormvariate(0, 1) for _ in range(rng.randint(1, 6))])
              for k in range(rng.randint(1, 4))]
    lo, hi = cost_range(groups)
    return groups, rng.randint(lo, hi)


def test_refinement_never_worsens_and_min_gain_blocks_small_moves():
    rng = random.Random(11)
    for _ in range(40):
        groups, budget = _random_layers(rng)
        base = allocate_classes(groups, budget)
        a = refine_tensors(groups, base, max_overrides=rng.randint(0, 8))
        assert a.total_bytes <= budget
        assert a.total_distortion <= base.total_distortion + 1e-12
        assert refine_tensors(groups, base, max_overrides=8, min_gain=1e9).overrides == {}


def test_tensor_level_lagrangian_finds_mixes_several_steps_apart():
    # a requantized Q4_K_M file: half the tensors are lossless at Q4_K, half at Q6_K; one step from
    # the class's Q5_K reaches neither, the tensor-level Lagrangian finds both
    lossless = {0: "Q4_K", 1: "Q6_K", 2: "Q4_K", 3: "Q6_K"}
    ts = tuple(TensorCost(f"blk.{i}.ffn_down.weight", dict(BYTES),
                          {t: (0.0 if t == lossless[i] else ERR[t] + (5.0 if t == "Q4_K" and i % 2 else 0.0))
                           for t in ORDER}) for i in range(4))
    g = Group("ffn_down", ts, ORDER)
    budget = 2 * BYTES["Q4_K"] + 2 * BYTES["Q6_K"]
    base = allocate_classes([g], budget)
    assert base.group_types == {"ffn_down": "Q5_K"}
    assert refine_tensors([g], base, max_overrides=2).total_distortion > 0    # needs all 4 moved
    a = allocate([g], budget, max_overrides=2)
    assert a.tensor_types == {f"blk.{i}.ffn_down.weight": t for i, t in lossless.items()}
    assert a.total_distortion == 0.0 and a.total_bytes == budget and len(a.overrides) == 2
    capped = allocate([g], budget, max_overrides=1)             # the mix needs 2 overrides
    assert len(capped.overrides) <= 1 and capped.total_distortion > 0


def test_allocate_never_worse_than_refinement():
    rng = random.Random(5)
    for _ in range(40):
        groups, budget = _random_layers(rng)
        cap = rng.randint(0, 8)
        a = allocate(groups, budget, max_overrides=cap)
        r = refine_tensors(groups, allocate_classes(groups, budget), max_overrides=cap)
        assert a.total_bytes <= budget and len(a.overrides) <= cap
        assert a.total_distortion <= r.total_distortion + 1e-12


def test_tensor_level_allocation_is_exact_with_room_for_overrides():
    # every tensor its own group and the cap out of the way: the answer is the per-tensor optimum (the
    # greedy fill alone spent leftover bytes on the largest single saving and stopped short of it)
    for seed in range(120):
        rng = random.Random(seed)
        groups = _random_instance(rng, rng.randint(2, 4), small_costs=bool(rng.getrandbits(1)))
        singles = [Group(t.name, (t,), g.candidates) for g in groups for t in g.tensors]
        if math.prod(len(g.candidates) for g in singles) > 200_000:
            continue
        lo, hi = cost_range(singles)
        budget = rng.randint(lo, hi)
        a = allocate(groups, budget, max_overrides=len(singles))
        assert a.total_bytes <= budget
        assert a.total_distortion == pytest.approx(_brute_force(singles, budget), rel=1e-9, abs=1e-9)


def test_exact_finish_never_worse_than_the_fill_within_the_cap(monkeypatch):
    # the optimum may need more overrides than the cap allows; the fill's answer then still counts
    import prism_native.plan.allocate as alloc_mod
    rng = random.Random(31)
    cases = []
    for _ in range(60):
        groups, budget = _random_layers(rng)
        cases.append((groups, budget, rng.randint(0, 8)))
    exact = [allocate(g, b, max_overrides=cap).total_distortion for g, b, cap in cases]
    monkeypatch.setattr(alloc_mod, "TENSOR_DP_STATES", 0)         # the fill alone
    for (g, b, cap), d in zip(cases, exact):
        assert d <= allocate(g, b, max_overrides=cap).total_distortion + 1e-12
