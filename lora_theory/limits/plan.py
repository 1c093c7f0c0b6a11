"""What the polynomial method and the exact gradient will cost before they run: degree, rank, bytes, seconds.

For an instance (or a shape and a score range R) and a target eps, :func:`approx_plan` returns
the degree the method needs (measured by :func:`exp_polynomial` when it is reachable, else the
Aggarwal-Alman bound :func:`degree_bound`), the feature rank k = C(g + d, d) (an exact Python int,
reported even when it is far too large to build), the predicted peak bytes and multiply-add counts
of ``approx_gradients`` and of the blocked exact gradient, and predicted seconds on this machine
from a calibrated cost model (:class:`CostModel`). Nothing of size L x k is allocated.

Operation counts (m = the key-side input columns: n for self/cross attention, 2n otherwise;
c = 1 + m + m(m + 1)/2 moment columns; see ``lowrank``):

    approx ~ 2 L k c (the two moment contractions) + 2 L k (features) + L m^2 d (per-row algebra)
    exact  ~ L^2 (4 d + d min(n_adapted, 2) + 3)        (blocked closed form, Lemma 3.1)

:func:`check_resources` is the guard ``approx_gradients`` runs before allocating: it refuses, with
an :class:`ApproximationError` naming the degree, k, the bytes and which of eps, the score range
(the norm bound) or d would make it fit, when k exceeds ``max_features`` or the predicted peak
exceeds the memory budget (default: half of the available RAM).

Reference: Hu et al. (2024), Thm 3.1 / A.1 and Sec. 5; Alman & Song (2023), Lemma 3.2-3.3;
claims ``limits.thm3.1``, ``limits.thmA.1``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from .._validate import InvalidArgumentError, check_choice, check_int, check_positive
from .instance import AttentionLoRAInstance
from .lowrank import ApproximationError
from .polynomial import degree_bound, exp_polynomial

__all__ = [
    "DEFAULT_MAX_FEATURES",
    "ApproxPlan",
    "CostModel",
    "approx_bytes",
    "approx_flops",
    "approx_plan",
    "available_memory_bytes",
    "check_resources",
    "cost_model",
    "default_feature_block",
    "degree_groups",
    "exact_bytes",
    "exact_flops",
    "memory_budget_bytes",
]

#: Default ``max_features`` of ``approx_gradients``: beyond ~1e6 features per row the method is
#: slower than the exact gradient for every L a CPU can hold (k d^2 > L d), and one (k, c) moment
#: matrix alone is tens of MB.
DEFAULT_MAX_FEATURES = 1 << 20
_RSS_FLOOR = 8.0 * 2**20  # bytes every approx_gradients call adds to the peak RSS whatever its size (see approx_bytes)
_FEATURE_BLOCK_BYTES = 1 << 22  # one (k, block) feature slice of ~4 MiB: at L = 2^15, d = 4 blocks of 1k-8k rows ran within 8% of each other, 256 rows 25% slower


def _fl(k: int | float) -> float:
    """float(k), or inf when the exact integer k (a feature count C(g + d, d)) is beyond float64 (issue 21, case 7)."""
    try:
        return float(k)
    except OverflowError:
        return math.inf


def _fmt_int(k: int, digits: int = 4) -> str:
    """k with ``digits`` significant digits, also beyond float64 (an exact C(g + d, d) can have hundreds of digits)."""
    if _fl(k) < math.inf:
        return f"{k:.{digits}g}"
    s = str(k)
    return f"{s[0]}.{s[1:digits]}e+{len(s) - 1}"


def exact_flops(L: int, d: int, n_adapted: int = 3) -> float:
    """Multiply-adds of the blocked exact gradient: 4 L^2 d (S, f V, c V^T, f^T c) + L^2 d per Q/K side + 3 L^2."""
    return float(L) * float(L) * (4 * d + d * min(n_adapted, 2) + 3)


def moment_columns(m: int) -> int:
    """c = 1 + m + m(m + 1)/2: the columns of the moment contraction for m key-side inputs."""
    return 1 + m + m * (m + 1) // 2


def approx_flops(L: int, d: int, k: int, n_adapted: int = 3, m: int | None = None) -> float:
    """Multiply-adds of approx_gradients: 2 L k c (moments) + 2 L k (features) + L m^2 (d + 4) (per row).

    ``m`` defaults to d (self/cross attention, X (L, d)); ``n_adapted`` is kept for the callers of
    the earlier count (the moment form computes every side from the same moments).
    """
    m = d if m is None else m
    return float(L) * _fl(k) * (2 * moment_columns(m) + 2) + float(L) * m * m * (d + 4)


def default_feature_block(k: int, L: int, itemsize: int = 8, batch: int = 1) -> int:
    """Rows per feature block: ~4 MiB per (k, block) slice, between 64 and 8192 rows (at most L).

    A batch of E elements shares one (k, E, block) slice of up to min(E, 8) x 4 MiB: the per-block
    work outside the GEMMs (the bound's ~100 small ops) is paid once per block for all E elements, so
    E-fold smaller blocks ran 1.2-1.5x slower per head (12 heads, L = 2^12, d = 4, k = 495: 57.6 ms per
    head at 88 rows, 39.3 at 1024; benchmarks/README.md).
    """
    per_row = max(1, min(k, 1 << 62) * itemsize * batch)  # k beyond 2^62 rows of features: the 64-row floor anyway
    return max(1, min(L, max(64, min(8192, _FEATURE_BLOCK_BYTES * min(batch, 8) // per_row))))


def approx_bytes(L: int, d: int, k: int, *, m: int | None = None, n: int | None = None, itemsize: int = 8, block: int | None = None,
                 batch: int = 1, causal: bool = False) -> float:
    """Predicted peak bytes of ``approx_gradients`` (features and rows streamed in blocks), per path.

    Per element (E of them in a batch, run at once): one (k, block) feature slice, the (k, c) moment matrix,
    a (block, c) slice of key columns and ~6 (block, m, m) per-row temporaries of the moments and the bound,
    the O(L (n + d)) inputs and projections (~10 copies) and the bound's per-row projection errors (4 L d);
    the error bound's own tensors (issue 21, case 6): the quadratic-form tables (m^2, P) with P = 2 d + 2 n
    columns (V, K, X_K, X_V) and (m^2, d (d + n)) (Cov(V, K), Cov(V, X_K)) twice (built, then joined), and their
    per-block products (block, P) and (block, d (d + n)) x 3. Plus the monomial tables (k d int64 + k float64).
    ``m`` (key-side inputs, n or 2 n) and ``n`` (input width) default to d. ``causal``: blocks of at most
    ``CAUSAL_BLOCK`` rows, a copy of the key features' slice, the (block, block) masked diagonal block and the
    (k, c) update per element. Plus a floor of 8 MiB that every first call adds to the process's peak whatever
    the size (allocator arenas, the polynomial fit's tables: causal runs of under 4 MiB of tensors measured 10.4-10.8
    MiB). Measured peaks: benchmarks/README.md (bench_plan.py, the plan table over paths).
    Returns inf when k is beyond float64.
    """
    m = d if m is None else m
    n = d if n is None else n
    c = moment_columns(m)
    E = float(batch)
    kf = _fl(k)
    b = default_feature_block(k, L, itemsize, batch) if block is None else block
    if causal:
        from .lowrank import CAUSAL_BLOCK  # lowrank imports exact; kept local to keep plan's imports light

        b = min(b, CAUSAL_BLOCK) if block is None else b
    P, Dn = 2.0 * (d + n), float(d) * (d + n)
    mm = float(m) * m
    bound_words = mm * P + 2.0 * mm * Dn + b * (2.0 * P + 3.0 * Dn) + 4.0 * L * d
    words = E * (kf * b + kf * c + float(b) * c + 6.0 * b * mm + 10.0 * L * (n + d) + bound_words) + 4.0 * kf
    if causal:
        words += E * (kf * b + float(b) * b + kf * c)
    return itemsize * words + 8.0 * kf * (d + 2) + _RSS_FLOOR


def exact_bytes(L: int, d: int, *, itemsize: int = 8, block: int | None = None) -> float:
    """Predicted peak bytes of the blocked ``exact_gradients``: 3 (block, L) pieces + O(L d)."""
    from .exact import default_block_size  # exact imports instance only; kept local to keep plan's imports light

    b = default_block_size(L) if block is None else block
    return itemsize * (3.0 * b * L + 10.0 * L * d)


def available_memory_bytes() -> float:
    """Bytes of RAM available now: psutil if installed, else MemAvailable of /proc/meminfo, else 8 GiB."""
    try:
        import psutil  # optional

        return float(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return 8.0 * 2**30  # not Linux and no psutil: a conservative guess


def memory_budget_bytes(budget: float | None = None) -> float:
    """The memory budget in bytes: ``budget`` if given (> 0), else half of :func:`available_memory_bytes`."""
    if budget is None:
        return 0.5 * available_memory_bytes()
    return check_positive("memory_budget", budget)


def _fits(k: int, nbytes: float, max_features: int, budget: float) -> bool:
    return k <= max_features and nbytes <= budget


def _need(L: int, d: int, m: int, n: int, R: float, eps: float, method: str, max_degree: int, itemsize: int, batch: int = 1) -> tuple[int, int, float]:
    p = exp_polynomial(R, eps, method=method, max_degree=max_degree)
    g = p.degree if p.certified else max(degree_bound(R, eps), p.degree + 1)
    k = math.comb(g + d, d)
    return g, k, approx_bytes(L, d, k, m=m, n=n, itemsize=itemsize, batch=batch)


def degree_groups(R: torch.Tensor, eps: float, method: str, max_degree: int) -> list[tuple[torch.Tensor, float]]:
    """Elements grouped by the degree their own range R_e needs: [(element indices, largest R_e in the group)], by degree.

    The degree of the certified polynomial grows with R, so over the elements sorted by R it is found by
    bisection (O(groups log E) fits instead of E). Soundness does not rest on that monotonicity: each
    group's polynomial is fitted and certified again on the group's largest range, which covers every
    element in it; a wrong grouping could only cost speed.
    """
    order = torch.argsort(R)
    Rs = R[order].tolist()
    memo: dict[int, int] = {}

    def deg(i: int) -> int:
        if i not in memo:
            memo[i] = exp_polynomial(Rs[i], eps, method=method, max_degree=max_degree).degree
        return memo[i]

    label = [0] * len(Rs)

    def assign(lo: int, hi: int) -> None:  # deg(lo) and deg(hi) known; fill lo..hi
        if deg(lo) == deg(hi) or hi - lo <= 1:
            for i in range(lo, hi + 1):
                label[i] = deg(hi) if deg(lo) == deg(hi) else deg(i)
            return
        mid = (lo + hi) // 2
        assign(lo, mid)
        assign(mid, hi)

    assign(0, len(Rs) - 1)
    out = []
    for g in sorted(set(label)):
        pos = [i for i, x in enumerate(label) if x == g]
        out.append((order[pos], max(Rs[i] for i in pos)))
    return out


def check_resources(*, L: int, d: int, k: int, degree: int, R: float, eps: float, method: str = "chebyshev", m: int | None = None,
                    n: int | None = None, itemsize: int = 8, max_features: int = DEFAULT_MAX_FEATURES, budget: float | None = None,
                    max_degree: int = 40, what: str = "approx_gradients", batch: int = 1, causal: bool = False) -> float:
    """Refuse before allocating when k > max_features or the predicted peak bytes exceed the budget.

    ``batch``: the number of elements E of a batched instance (run at once; the bytes scale with E).

    Returns:
        The predicted peak bytes (when it fits).

    Raises:
        ApproximationError: naming degree, k, the bytes, the limit, and what would fit: the largest
            eps (of 10^-1 .. 10^-12 and 0.5) and the largest score range R (a bisection) at which
            the same (L, d) fits, and the largest d that fits at this degree.
    """
    m = d if m is None else m
    n = d if n is None else n
    max_features = check_int("max_features", max_features, low=1)
    limit = memory_budget_bytes(budget)
    batch = check_int("batch", batch, low=1)
    nbytes = approx_bytes(L, d, k, m=m, n=n, itemsize=itemsize, batch=batch, causal=causal)
    if _fits(k, nbytes, max_features, limit):
        return nbytes
    over = (f"k = {_fmt_int(k, 3)} > max_features = {max_features}" if k > max_features else
            f"the predicted peak of {nbytes:.3g} bytes > the memory budget of {limit:.3g} bytes"
            + (" (half of the available RAM)" if budget is None else ""))
    advice = []
    eps_ok = [e for e in (0.5, 1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12) if e > eps and _fits(*_need(L, d, m, n, R, e, method, max_degree, itemsize, batch)[1:], max_features, limit)]
    advice.append(f"eps >= {min(eps_ok):.0e} fits" if eps_ok else "no eps < 1 fits at this range")
    lo, hi = 0.0, R
    if _fits(*_need(L, d, m, n, 1e-6, eps, method, max_degree, itemsize, batch)[1:], max_features, limit):
        for _ in range(30):  # bisection on R: the degree is monotone in R
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _fits(*_need(L, d, m, n, mid, eps, method, max_degree, itemsize, batch)[1:], max_features, limit) else (lo, mid)
        advice.append(f"a score range R <= {lo:.3g} fits (now {R:.3g}: scale the norm bound by sqrt({lo / R:.2g}) or lower beta)")
    else:
        advice.append("no score range fits at this eps and d")
    d_ok = [dd for dd in range(d - 1, 0, -1) if _fits(math.comb(degree + dd, dd), approx_bytes(L, dd, math.comb(degree + dd, dd), itemsize=itemsize, batch=batch), max_features, limit)]
    advice.append(f"d <= {d_ok[0]} fits at degree {degree}" if d_ok else f"no d fits at degree {degree}")
    raise ApproximationError(
        f"{what}: degree {degree} in d = {d} needs k = C({degree + d}, {d}) = {_fmt_int(k, 3)} features per row and about {nbytes:.3g} bytes at L = {L}: "
        f"{over}{f' (for {batch} batch elements at once)' if batch > 1 else ''}. To fit: {'; '.join(advice)}. (Or raise max_features / memory_budget, or use exact_gradients.)")


# -- cost model ------------------------------------------------------------------------------------------

_CACHE_ENV = "LORA_THEORY_CACHE"
_CACHE_FILE = "cost_model.json"


@dataclass(frozen=True)
class CostModel:
    """Seconds = a linear model in operation counts, fitted by timing small runs on this machine.

    approx, for E elements run at once: ``a_const + a_fit (g + 1) + E (a_feat 2 L k + a_mm (2 L k c + causal L b (k + c))
    + a_L L (16 + m^2 + 2 (d + n)) + a_row L m^2 (d + P + d (d + n))) + a_op (2 L / b) d g`` (the polynomial fit, the
    features, the moment contractions and a causal instance's masked diagonal blocks, the per-row elementwise work on
    the (m, m) moments and the vectors of the bound, the per-row GEMMs of the bound's quadratic forms,
    P = 2 d + 2 n, and the per-block small operations, paid once per block for all E elements; b is the block,
    at most ``CAUSAL_BLOCK`` when causal) + ``a_tab E m^2 (P + 2 d (d + n))`` (building the bound's quadratic-form
    tables once per run, elementwise); exact: ``e_const + e_mm L^2 d_mm + e_elem L^2 + e_blk L / block``
    with d_mm = 4 d + d min(n_adapted, 2) (the blocked closed form: GEMMs, exp and the other
    elementwise passes, per-block overhead).

    Coefficients are seconds per unit (CPU time of one process with ``threads`` torch threads, or
    synchronized wall time on CUDA). ``source`` says where it came from ("default": constants
    measured on the development machine, 2 shared cores, one thread; "calibrated":
    :func:`lora_theory.limits.calibration.calibrate_cost_model` on this one).
    """

    # calibrate_cost_model on the development machine (2 shared cores, loaded by other jobs, one thread), issue 21's
    # terms (the run of benchmarks/results_plan_paths.json)
    a_const: float = 1.26e-3
    a_fit: float = 6.37e-4
    a_feat: float = 0.0
    a_mm: float = 0.0
    a_L: float = 5.86e-8
    a_row: float = 0.0
    a_op: float = 1.01e-4
    a_tab: float = 3.39e-9
    e_const: float = 6.21e-4
    e_mm: float = 6.84e-11
    e_elem: float = 1.24e-8
    e_blk: float = 0.0
    threads: int = 1
    device: str = "cpu"
    source: str = "default"

    @staticmethod
    def approx_terms(L: int, d: int, k: int, degree: int, m: int | None = None, *, n: int | None = None, causal: bool = False,
                     batch: int = 1) -> list[float]:
        """The operation counts the approx coefficients multiply, in field order (see the class docstring)."""
        m = d if m is None else m
        n = d if n is None else n
        b = default_feature_block(k, L, 8, batch)
        if causal:
            from .lowrank import CAUSAL_BLOCK  # see approx_bytes

            b = min(b, CAUSAL_BLOCK)
        kf, E = _fl(k), float(batch)
        c = moment_columns(m)
        mm = 2.0 * L * kf * c + (float(L) * b * (kf + c) if causal else 0.0)
        return [1.0, degree + 1.0, E * 2.0 * L * kf, E * mm, E * L * (16.0 + m * m + 2.0 * (d + n)), E * L * m * m * (d + 2.0 * (d + n) + d * (d + n)),
                2.0 * math.ceil(L / b) * d * max(degree, 1), E * m * m * (2.0 * (d + n) + 2.0 * d * (d + n))]

    @staticmethod
    def exact_terms(L: int, d: int, n_adapted: int = 3) -> list[float]:
        from .exact import default_block_size  # see exact_bytes

        return [1.0, float(L) * L * (4 * d + d * min(n_adapted, 2)), float(L) * L, float(math.ceil(L / default_block_size(L)))]

    def approx_seconds(self, L: int, d: int, k: int, degree: int, m: int | None = None, *, n: int | None = None, causal: bool = False,
                       batch: int = 1) -> float:
        coef = (self.a_const, self.a_fit, self.a_feat, self.a_mm, self.a_L, self.a_row, self.a_op, self.a_tab)
        terms = self.approx_terms(L, d, k, degree, m, n=n, causal=causal, batch=batch)
        return float(sum(c * x for c, x in zip(coef, terms, strict=True) if x and c))  # a zero count or rate costs nothing (0 x inf is not nan)

    def exact_seconds(self, L: int, d: int, n_adapted: int = 3) -> float:
        coef = (self.e_const, self.e_mm, self.e_elem, self.e_blk)
        return float(sum(c * x for c, x in zip(coef, self.exact_terms(L, d, n_adapted), strict=True)))


def _cache_path() -> Path:
    root = os.environ.get(_CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lora_theory")
    return Path(root) / _CACHE_FILE


def _machine_key(threads: int, device: str) -> str:
    return f"{platform.node()}|{platform.machine()}|{platform.processor()}|{os.cpu_count()}|torch {torch.__version__}|{device}|threads {threads}"


def cost_model(*, threads: int = 1, device: str = "cpu") -> CostModel:
    """The calibrated model of this machine from the cache, else the defaults.

    To calibrate (time small runs and store the fit where this finds it), call
    :func:`lora_theory.limits.calibration.calibrate_cost_model`: calibration runs the methods this
    module plans, so it lives above both (plan <- approx <- calibration, no import circle).
    """
    path = _cache_path()
    try:
        data = json.loads(path.read_text())
        entry = data.get(_machine_key(threads, device))
        if entry:
            return CostModel(**entry)
    except (OSError, ValueError, TypeError):  # no cache yet, or an unreadable one: fall through
        pass
    return dataclasses.replace(CostModel(), threads=threads, device=device)


@dataclass(frozen=True)
class ApproxPlan:
    """The polynomial method's and the exact gradient's cost for one (L, d, R, eps), computed without running.

    Attributes:
        L, d, R, eps, method: the problem (R: the score range the polynomial must cover).
        degree: g; ``degree_source`` says "measured" (the lowest degree whose certified sup relative
            error on [-R, R] is <= eps, up to ``max_degree``) or "bound" (beyond it: the fitted
            Aggarwal-Alman bound, an estimate).
        k: C(g + d, d) features per row (exact integer, may be astronomically large).
        feature_bytes: bytes the two (L, k) feature matrices would take if materialized (they are
            not: ``approx_bytes`` is the predicted peak).
        approx_bytes, exact_bytes: predicted peak bytes of each method.
        approx_flops, exact_flops: multiply-adds of the two methods; ``cost_ratio`` = approx / exact.
        approx_seconds, exact_seconds: predicted by the cost model (``model`` says which).
        certifiable: whether eps is reachable (degree_source == "measured") within max_features and the budget.
        n_adapted: how many of W_Q, W_K, W_V carry LoRA (2 for "qv", 3 for "qkv").
        batch: the number of batch elements E (heads times sequences) of a batched instance, 1
            otherwise. For E > 1, R is the largest per-element score range, degree and k are the
            worst element's, flops, seconds and ``feature_bytes`` are totals over the elements, each
            at the degree its own range needs (the groups approx_gradients runs, :func:`degree_groups`),
            and ``approx_bytes`` is the largest group's peak (the groups run one after another);
            with a caller's R every element is planned at that R.
    """

    L: int
    d: int
    R: float
    eps: float
    method: str
    degree: int
    degree_source: Literal["measured", "bound"]
    k: int
    feature_bytes: float
    approx_flops: float
    exact_flops: float
    n_adapted: int
    approx_bytes: float = math.nan
    exact_bytes: float = math.nan
    approx_seconds: float = math.nan
    exact_seconds: float = math.nan
    certifiable: bool = True
    model: str = "default"
    batch: int = 1

    @property
    def cost_ratio(self) -> float:
        """approx_flops / exact_flops: < 1 where the polynomial method is predicted to be cheaper."""
        return self.approx_flops / self.exact_flops

    @property
    def faster(self) -> Literal["approx", "exact"]:
        """The method predicted to finish first, among those that can run ("exact" if approx cannot certify)."""
        return "approx" if self.certifiable and self.approx_seconds < self.exact_seconds else "exact"

    def summary(self) -> str:
        """One line: degree, k, bytes and predicted seconds of both methods."""
        return (f"L = {self.L}, d = {self.d}, R = {self.R:.3g}, eps = {self.eps:.0e}: approx degree {self.degree} ({self.degree_source}), "
                f"k = {_fmt_int(self.k)}, ~{self.approx_bytes / 2**20:.3g} MiB, ~{self.approx_seconds:.3g} s"
                f"{'' if self.certifiable else ' (cannot certify eps)'}; exact ~{self.exact_bytes / 2**20:.3g} MiB, ~{self.exact_seconds:.3g} s"
                f" [{self.model} cost model]")


def approx_plan(
    inst: AttentionLoRAInstance | None = None,
    eps: float = 1e-3,
    *,
    L: int | None = None,
    d: int | None = None,
    R: float | None = None,
    adapt: str = "qkv",
    method: Literal["chebyshev", "taylor"] = "chebyshev",
    max_degree: int = 40,
    dtype: torch.dtype = torch.float64,
    max_features: int = DEFAULT_MAX_FEATURES,
    memory_budget: float | None = None,
    model: CostModel | None = None,
    n: int | None = None,
    causal: bool = False,
) -> ApproxPlan:
    """Degree, rank, bytes, operation counts and predicted seconds of both methods for an instance or a shape.

    Args:
        inst: an instance (L, d, adapt and R are read from it; R is the Cauchy-Schwarz bound
            :func:`lora_theory.score_range_bound`, the range ``approx_gradients`` covers), or None.
            A batched instance plans all its elements at once (totals; see :class:`ApproxPlan`).
        eps: target sup relative error of P(s) ~ e^s, in (0, 1).
        L, d, R, adapt: the shape, score range and adapted weights when ``inst`` is None.
        n, causal: the input width (default d) and whether the instance is causal, when ``inst`` is None
            (read from the instance otherwise; both change the bytes and seconds, issue 21).
        method: "chebyshev" or "taylor"; max_degree: the largest degree searched by measurement.
        dtype: of the computation (for the bytes).
        max_features, memory_budget: the limits ``approx_gradients`` enforces (for ``certifiable``).
        model: the cost model; default :func:`cost_model` (the calibrated one if cached, else defaults).

    Returns:
        An :class:`ApproxPlan`.
    """
    eps = check_positive("eps", eps)
    if eps >= 1:
        raise InvalidArgumentError(f"eps: expected a number in (0, 1), got {eps}")
    check_choice("method", method, ("chebyshev", "taylor"))
    max_degree = check_int("max_degree", max_degree, low=0, high=60)
    max_features = check_int("max_features", max_features, low=1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidArgumentError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    if model is not None and not isinstance(model, CostModel):
        raise InvalidArgumentError(f"model: expected a CostModel or None, got {type(model).__name__}")
    m = None
    E = 1
    groups: list[tuple[int, float]] | None = None  # (elements, R) per degree group of a batched instance
    if inst is not None:
        if not isinstance(inst, AttentionLoRAInstance):
            raise InvalidArgumentError(f"inst: expected an AttentionLoRAInstance or None, got {type(inst).__name__}")
        from .lowrank import key_inputs, score_range_bound  # lowrank imports exact; kept local to keep plan light

        L, d, adapt, n = inst.L, inst.d, inst.adapt, inst.n
        m = key_inputs(inst)[0].shape[-1]
        E = math.prod(inst.batch_shape)
        causal = inst.causal
        if E > 1 and R is None:
            from .lowrank import score_range_bounds  # local for the same reason

            groups = [(len(idx), R_g) for idx, R_g in degree_groups(score_range_bounds(inst).reshape(-1).clamp(min=1e-12).cpu(), eps, method, max_degree)]
        R = score_range_bound(inst) if R is None else check_positive("R", R, allow_zero=True)
    else:
        if L is None or d is None or R is None:
            raise InvalidArgumentError(f"inst: expected an instance, or L, d and R, got L={L!r}, d={d!r}, R={R!r}")
        L, d = check_int("L", L, low=1), check_int("d", d, low=1)
        n = d if n is None else check_int("n", n, low=1)
        if not isinstance(causal, bool):
            raise InvalidArgumentError(f"causal: expected a bool, got {causal!r}")
        R = check_positive("R", R, allow_zero=True)
        adapt = "".join(sorted(set(adapt), key="qkv".index)) if isinstance(adapt, str) and set(adapt) <= set("qkv") and adapt else adapt
        check_choice("adapt", adapt, ("q", "k", "v", "qk", "qv", "kv", "qkv"))
    n_adapted = len(adapt)
    poly = exp_polynomial(R, eps, method=method, max_degree=max_degree)
    if poly.certified:
        degree, source = poly.degree, "measured"
    else:
        degree, source = max(degree_bound(R, eps), poly.degree + 1), "bound"
    k = math.comb(degree + d, d)
    itemsize = torch.empty((), dtype=dtype).element_size()
    model = cost_model() if model is None else model
    if groups is None:
        parts = [(E, degree, k)]
    else:  # every group at the degree of its largest range (the worst group is the one planned above)
        parts = []
        for n_g, R_g in groups:
            p_g = exp_polynomial(R_g, eps, method=method, max_degree=max_degree)
            g_g = p_g.degree if p_g.certified else max(degree_bound(R_g, eps), p_g.degree + 1)
            parts.append((n_g, g_g, math.comb(g_g + d, d)))
    a_bytes = max(approx_bytes(L, d, k_g, m=m, n=n, itemsize=itemsize, batch=n_g, causal=causal) for n_g, _, k_g in parts)
    fits = k <= max_features and a_bytes <= memory_budget_bytes(memory_budget)
    return ApproxPlan(L=L, d=d, R=float(R), eps=eps, method=method, degree=degree, degree_source=source, k=k,
                      feature_bytes=sum(2.0 * n_g * L * _fl(k_g) * itemsize for n_g, _, k_g in parts),
                      approx_flops=sum(n_g * approx_flops(L, d, k_g, n_adapted, m) for n_g, _, k_g in parts),
                      exact_flops=E * exact_flops(L, d, n_adapted), n_adapted=n_adapted, approx_bytes=a_bytes,
                      exact_bytes=E * exact_bytes(L, d, itemsize=itemsize),
                      approx_seconds=sum(model.approx_seconds(L, d, k_g, g_g, m, n=n, causal=causal, batch=n_g) for n_g, g_g, k_g in parts),
                      exact_seconds=E * model.exact_seconds(L, d, n_adapted), certifiable=source == "measured" and fits, model=model.source,
                      batch=E)
