"""Numbers for people: the one set of formatting helpers every renderer and the findings' sentences use.

A leaf module (imports nothing from dropscope), so any step of the pipeline may use it.
"""

from __future__ import annotations


def format_count(value: int | float | None) -> str:
    """A count with thousands separators.

    >>> format_count(1234567), format_count(2.5), format_count(None)
    ('1,234,567', '2.50', '–')
    """
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def format_rate(value: float | None, margin: float | None = None) -> str:
    """A per-second rate for tables, with sensible precision; an estimate (MARGIN, its ±2σ, not 0) with `~`
    and its margin.

    >>> [format_rate(v) for v in (None, 0, 0.004, 2.5, 98.039, 1234.5)]
    ['–', '0', '<0.01', '2.50', '98.0', '1,234']
    >>> format_rate(413.6, 34.1), format_rate(413.6, 0.0)
    ('~414 ± 34.1', '414')
    """
    if margin:
        return f"~{format_rate(value)} ± {format_rate(margin)}"
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if value < 0.01:
        return "<0.01"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def rate_phrase(value: float | None) -> str:
    """A rate for sentences (finding explanations): 2 or 3 significant digits, no trailing ".0" (so "8/s"
    and "14/s" in one sentence, not "8/s" and "14.0/s").

    >>> [rate_phrase(v) for v in (None, 0, 0.00004, 0.333, 8.0, 12.34, 14.0, 98.04, 166.667, 1234.5)]
    ['rate unknown', '0/s', '<0.01/s', '0.33/s', '8/s', '12.3/s', '14/s', '98/s', '167/s', '1,234/s']
    """
    if value is None:
        return "rate unknown"
    if value <= 0:
        return "0/s"
    if value < 0.01:
        return "<0.01/s"
    text = f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2g}"
    return (text[:-2] if text.endswith(".0") else text) + "/s"


def format_seconds(value: float | None) -> str:
    """Seconds for display.

    >>> format_seconds(5.1), format_seconds(312.4), format_seconds(None)
    ('5.1 s', '312 s', '–')
    """
    if value is None:
        return "–"
    return f"{value:,.1f} s" if value < 100 else f"{value:,.0f} s"


def format_change(value: float | None) -> str:
    """A change in percent (infinite: from nothing to something).

    >>> format_change(12.4), format_change(-50.0), format_change(float("inf")), format_change(None)
    ('+12 %', '-50 %', 'new', '–')
    """
    if value is None:
        return "–"
    if value == float("inf"):
        return "new"
    return f"{value:+.0f} %"
