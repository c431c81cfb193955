"""The statistics of counterfactual probes: exact, stratified by case, honest about power.

A bias probe runs every case once per group (the same text, only the attribute
changed), so each case is a stratum: whatever makes a case easy or hard is the same
for every group. The test here is the exact conditional test of "no group effect
within any case" (the exact form of the Cochran-Mantel-Haenszel test; with one run
per group and case it is McNemar's exact test on the discordant pairs): given each
case's total of positive decisions, how the positives split between the two groups
is a hypergeometric draw per case, and the sum over cases has an exact
distribution. It never exceeds its false-alarm rate, at any sample size.

Stdlib only: the distributions are small (a probe has at most a few thousand runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

#: one case's counts: (positives of group A, runs of A, positives of group B, runs of B)
Stratum = tuple[int, int, int, int]

_Z = NormalDist()


def wilson(positive: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (good at small counts and near 0 or 1,
    where the textbook Wald interval is too narrow)."""
    if total == 0:
        return (0.0, 1.0)
    z = _Z.inv_cdf(0.5 + confidence / 2)
    p = positive / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe(a: int, n1: int, b: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for the difference of two proportions a/n1 - b/n2
    (built from the two Wilson intervals; covers close to its level at small counts)."""
    p1, p2 = (a / n1 if n1 else 0.0), (b / n2 if n2 else 0.0)
    l1, u1 = wilson(a, n1, confidence)
    l2, u2 = wilson(b, n2, confidence)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (max(-1.0, low), min(1.0, high))


def stratified_exact_test(strata: Sequence[Stratum]) -> float:
    """Two-sided p-value of the exact stratified test that the two groups get the
    positive decision equally often within every case.

    Conditional on each case's margins, group A's positives in a case are
    hypergeometric; their sum over cases is the convolution of those distributions.
    The p-value adds the probabilities of every sum no more likely than the one seen.
    Cases where every run agreed carry no information and drop out, as in McNemar's test.
    """
    distribution = [1.0]  # P(sum of group A's positives = offset + i)
    offset = observed = 0
    for a, n1, b, n2 in strata:
        m = a + b
        n = n1 + n2
        if m == 0 or m == n:  # no room for the groups to differ in this case
            continue
        low, high = max(0, m - n2), min(m, n1)
        total = math.comb(n, m)
        pmf = [math.comb(n1, k) * math.comb(n2, m - k) / total for k in range(low, high + 1)]
        distribution = _convolve(distribution, pmf)
        offset += low
        observed += a
    seen = distribution[observed - offset]
    # a relative tolerance: equal probabilities must count as "as extreme" despite rounding
    return min(1.0, sum(p for p in distribution if p <= seen * (1 + 1e-7)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of several tests' p-values (in their order): it keeps
    the chance of any false alarm among them at the level, without Bonferroni's cost."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def min_detectable_gap(
    per_group: int, base_rate: float, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest gap between two groups' rates that a probe with ``per_group`` runs
    per group detects with probability ``power`` at level ``alpha`` (two-sided).

    The normal approximation for two proportions centred on ``base_rate`` (kept
    within 0.1-0.9: a probe whose model said yes to everyone does not show that
    small gaps would be seen), plus Fleiss' continuity correction, which brings it
    close to the exact test's power (checked by simulation in the tests).
    """
    if per_group <= 0:
        return 1.0
    p = min(0.9, max(0.1, base_rate))
    z_alpha, z_power = _Z.inv_cdf(1 - alpha / 2), _Z.inv_cdf(power)
    n = per_group

    def detected(gap: float) -> bool:
        p1, p2 = min(1.0, p + gap / 2), max(0.0, p - gap / 2)
        gap = p1 - p2
        se0 = math.sqrt(2 * p * (1 - p) / n)
        se1 = math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n)
        if se1 == 0:
            return gap > z_alpha * se0
        return (gap - z_alpha * se0) / se1 >= z_power

    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (low, mid) if detected(mid) else (mid, high)
    return min(1.0, high + 1 / n)  # continuity correction: (1/n1 + 1/n2) / 2


def spent_alpha(alpha: float, done: float, before: float) -> float:
    """The share of ``alpha`` a look may use when the probe has spent ``done`` of its
    budget (0-1), the last look having been at ``before``: a quadratic spending function
    (little early, most at the end, like O'Brien-Fleming's). The shares of all looks
    add up to at most ``alpha``, so stopping at the first significant look keeps the
    false-alarm rate at ``alpha`` whatever the looks' correlation."""
    return alpha * (min(1.0, done) ** 2 - min(1.0, before) ** 2)


def _convolve(left: list[float], right: list[float]) -> list[float]:
    out = [0.0] * (len(left) + len(right) - 1)
    for i, x in enumerate(left):
        if x == 0.0:
            continue
        for j, y in enumerate(right):
            out[i + j] += x * y
    return out
