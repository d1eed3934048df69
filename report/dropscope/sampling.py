"""Counts from a sampled capture: estimates, and how far they may be from the true count.

Above its rate limit the capture module's rate guard makes bpftrace count 1 in N drops, chosen at random in
the kernel (the capture's `sample_one_in`, N), and multiplies what it counted by N. A group of true size n
then gives k ~ Binomial(n, 1/N) samples and the estimate N·k, whose standard deviation is √(n·(N−1)).

- `margin`: what the page, the findings, compare and check print beside an estimate, ±2σ (19 times in 20 the
  true count is inside), from the estimate itself (`estimate_text`; `rate_margin` for its rate). Compare
  calls a rate change within the two estimates' margins together the same (`compare.finding_change`).
- `LEDGER_SIGMAS`: how far the ledger lets a counter's exact delta and the estimates of the groups that
  account for it differ before it calls the difference unexplained: 4σ of the counter's own delta (a row
  called unexplained by chance about 6 times in 100,000).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

LEDGER_SIGMAS = 4.0


def one_in(capture: Mapping[str, Any] | None) -> int:
    """The capture's sampling: 1 in how many drops it counted (1: every drop, exact counts).

    >>> one_in({"sample_one_in": 8}), one_in({"backend": "perf"}), one_in(None)
    (8, 1, 1)
    """
    return int((capture or {}).get("sample_one_in") or 1)


def spread(count: int, sampled_one_in: int, sigmas: float) -> int:
    """`sigmas` standard deviations of an estimate of `count` drops sampled 1 in `sampled_one_in`, rounded up.

    >>> spread(4000, 8, 4.0), spread(4000, 1, 4.0), spread(0, 8, 2.0)
    (670, 0, 0)
    """
    return math.ceil(sigmas * math.sqrt(max(count, 0) * (sampled_one_in - 1)))


def margin(count: int, sampled_one_in: int) -> int:
    """The ± printed beside an estimate: 2σ.

    >>> margin(269000, 8)
    2745
    """
    return spread(count, sampled_one_in, 2.0)


def estimate_text(count: int, sampled_one_in: int) -> str:
    """COUNT as printed: an exact count as it is, an estimate with `~` and its ±2σ.

    >>> estimate_text(4136, 8), estimate_text(4136, 1)
    ('~4,136 ± 341', '4,136')
    """
    if sampled_one_in > 1:
        return f"~{count:,} ± {margin(count, sampled_one_in):,}"
    return f"{count:,}"


def rate_margin(count: int, rate: float | None, sampled_one_in: int) -> float | None:
    """The ±2σ of RATE, the rate of an estimate of COUNT drops (None when there is no rate; 0.0 when exact).

    >>> rate_margin(4136, 413.6, 8), rate_margin(4136, 413.6, 1), rate_margin(0, 0.0, 8)
    (34.1, 0.0, 0.0)
    """
    if rate is None:
        return None
    if sampled_one_in <= 1 or count <= 0:
        return 0.0
    return round(rate * margin(count, sampled_one_in) / count, 2)


def finding_one_in(finding: Mapping[str, Any], capture: Mapping[str, Any] | None) -> int:
    """1 in how many drops FINDING's count was counted: its host's CAPTURE's sampling when the finding stands on
    the capture's drops, 1 when on counters (a counter's delta is exact).

    >>> finding_one_in({"evidence": {"basis": "capture"}}, {"sample_one_in": 8})
    8
    >>> finding_one_in({"evidence": {"basis": "counters"}}, {"sample_one_in": 8})
    1
    """
    return one_in(capture) if finding["evidence"].get("basis") == "capture" else 1


def estimate_fields(count: int, rate: float | None, sampled_one_in: int) -> dict[str, Any]:
    """What a brief of an estimate carries beside its count and rate (nothing for an exact count): the sampling,
    the count's and the rate's ±2σ (`compare.finding_change` reads `rate_margin`).

    >>> estimate_fields(400, 39.96, 8), estimate_fields(400, 39.96, 1)
    ({'sampled_one_in': 8, 'count_margin': 106, 'rate_margin': 10.59}, {})
    """
    if sampled_one_in <= 1:
        return {}
    return {"sampled_one_in": sampled_one_in, "count_margin": margin(count, sampled_one_in),
            "rate_margin": rate_margin(count, rate, sampled_one_in)}  # fmt: skip
