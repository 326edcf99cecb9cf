"""The rules of ``mathrecipe solve`` as small pure functions: when a problem's vote is settled, how much time and how
many samples a problem gets, how long the next generate call may be, and how durations are written."""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Sequence

from mathrecipe.errors import MathRecipeError
from mathrecipe.solve.answers import top_two

DECIDED, LEAD = "decided", "lead"
UNBOUNDED = 2**31  # "as many steps as asked for"


def vote_settled(counts: Sequence[int], remaining: int, min_lead: int | None = None) -> str | None:
    """Whether a problem can stop drawing samples, and why.

    ``counts``: votes per distinct answer so far; ``remaining``: samples that have not voted yet (in flight or not
    started) out of the problem's planned total. With a = the leader's votes and b = the runner-up's (0 if none):

    - ``"decided"`` when a > b + remaining: even if every remaining vote went to the runner-up -- or to an answer not
      seen yet, which starts from 0 <= b -- the leader keeps strictly more votes, so the majority over all planned
      samples is already known. Stopping never changes the answer (no tie can form either).
    - ``"lead"`` when ``min_lead`` is set and a - b >= min_lead: a heuristic, earlier stop (the second-placed AIMO-2
      team stopped at e.g. 5 agreeing of 7 finished); it may differ from the full majority.
    - None otherwise (checked in that order).
    """
    if remaining < 0:
        raise ValueError(f"remaining must be >= 0, got {remaining}")
    if min_lead is not None and min_lead < 1:
        raise ValueError(f"min_lead must be >= 1, got {min_lead}")
    a, b = top_two(counts)
    if a > b + remaining:
        return DECIDED
    if min_lead is not None and a > 0 and a - b >= min_lead:
        return LEAD
    return None


def next_wave(counts: Sequence[int], remaining: int, min_lead: int | None = None) -> int:
    """Samples to start in the next wave (none in flight): the fewest that could settle the vote if they all
    agreed with the leader, so no sample is drawn that an earlier stop would have spared.

    With a = the leader's votes, b = the runner-up's, r = samples not yet drawn: y new votes for the leader settle
    it when a + y > b + (r - y), so y = floor((b + r - a) / 2) + 1; with ``min_lead`` k also y >= k - (a - b)
    suffices. The wave is min of the two, at least 1 and at most r. First wave of N: floor(N/2) + 1 (15 -> 8).
    """
    if remaining < 1:
        raise ValueError(f"remaining must be >= 1, got {remaining}")
    a, b = top_two(counts)
    y = (b + remaining - a) // 2 + 1
    if min_lead is not None:
        y = min(y, min_lead - (a - b))
    return max(1, min(remaining, y))


def time_share(remaining_s: float, problems_left: int) -> float:
    """A problem's share of the global time limit: remaining_s / problems_left (time an early stop saves flows on)."""
    if problems_left < 1:
        raise ValueError(f"problems_left must be >= 1, got {problems_left}")
    return max(0.0, remaining_s) / problems_left


CUT_SHARE = 2 / 3  # behind with samples that cost the same: the second-placed AIMO-2 team's cut (15 -> 10)
SAME_COST = 1.1  # waves within 10 % of the cheapest one's time "cost the same" (a GPU's parallel samples)


def planned_samples(max_samples: int, share_s: float, costs: Sequence[float | None], last_cut: bool = False) -> int:
    """Samples to plan for a problem, from what a wave of m samples is expected to take now.

    ``costs[m - 1]``: the expected seconds of m samples to their first answer (:func:`wave_seconds`), None where
    nothing priced it yet (no call measured at m itself, nor at batches on both sides of m). With N = ``max_samples``:

    - on time -- the last problem did not run out of time and c(N) <= ``share_s``, or nothing is priced yet: N
      (nothing priced after a problem ran out of time: ceil(2N/3));
    - behind, the largest m <= ceil(2N/3) with c(m) <= ``share_s`` (on a CPU a wave's cost grows with its samples:
      fewer samples that finish beat many that are cut before they write an answer);
    - behind and no such m: 1 when c(1) is not priced yet (the one wave that measures the cheapest cost), else the
      largest m <= ceil(2N/3) with c(m) <= 1.1 c(1) -- the samples that cost about what one does. On a GPU, where
      parallel samples cost the same, that is ceil(2N/3), the AIMO-2 team's cut (15 -> 10 when the time left per
      problem fell below 5 minutes); on a CPU, 1 or 2.
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    if len(costs) != max_samples:
        raise ValueError(f"costs must give one price per wave size 1..{max_samples}, got {len(costs)}")
    full = costs[-1]
    if full is None and not last_cut:
        return max_samples
    if not last_cut and full is not None and full <= share_s:
        return max_samples
    cap = math.ceil(CUT_SHARE * max_samples)
    fits = [m for m in range(1, cap + 1) if costs[m - 1] is not None and costs[m - 1] <= share_s]
    if fits:
        return max(fits)
    one = costs[0]
    if one is None:
        return 1 if full is not None else cap
    return max(m for m in range(1, cap + 1) if costs[m - 1] is not None and costs[m - 1] <= SAME_COST * one)


def typical_steps(history: Sequence[int], max_new_tokens: int, quantile: float = 0.75) -> int:
    """Decode steps to plan a problem's wave for: the ``quantile`` of the steps recent problems needed (the solver
    records those to a first answer), at most ``max_new_tokens``; ``max_new_tokens`` before any.

    A high quantile, not the mean: a wave planned for the typical problem would be cut on every harder one, and a
    sample cut before it writes its answer is wasted.
    """
    if not history:
        return max_new_tokens
    xs = sorted(history)
    return max(1, min(max_new_tokens, xs[min(len(xs) - 1, math.ceil(quantile * len(xs)) - 1)]))


def wave_seconds(times: CallTimes, batch: int, steps: int, chunk: int, bound: bool = False,
                 priced_only: bool = False) -> float | None:
    """Seconds a wave of ``batch`` samples takes to run ``steps`` decode steps in calls of ``chunk`` steps:
    floor(steps / chunk) x t(chunk) + t(steps mod chunk), with t from :meth:`CallTimes.seconds` (None: no call at
    this batch or larger measured yet; ``priced_only``: nor at this batch or smaller)."""
    full, rest = divmod(max(0, steps), max(1, chunk))
    one = times.seconds(batch, chunk, bound, priced_only) if full else 0.0
    tail = times.seconds(batch, rest, bound, priced_only) if rest else 0.0
    if one is None or tail is None:
        return None
    return full * one + tail


class CallTimes:
    """How long a generate call of k decode steps takes, and how many steps fit before a deadline, from the calls
    seen so far.

    A call of k decode steps takes about t(k) = a + b*k (a: prefill and call overhead, b: one step), both growing
    with the batch. From the recent calls i = (m_i, k_i, t_i) at batch m itself, or when there are none at batches
    m_i > m (at least as costly; mixing batches would read their differences as slow moments):

    - calls of several step counts: (a, b) by least squares (b clamped to [0, min_i t_i / k_i], a >= 0), and
      e = max_i (t_i - a - b*k_i) >= 0, the worst recent residual (a shared machine's slow moments):
      U(k) = SAFETY * (a + b*k + e);
    - calls of one step count k_0 (the overhead cannot be told from the steps): t(k) <= t_max for k <= k_0 and
      t(k) <= k * t_max / k_0 beyond, t_max the slowest of them: U(k) = SAFETY * t_max * max(1, k / k_0). Their
      expected time takes the overhead a' of the nearest batch measured at two step counts or more, or when a' is
      not below t_0 (the median) its share of a k_0-step call: a = t_0 * a' / (a' + b' * k_0); t(k) = a + (t_0 - a)
      * k / k_0.

    A call is planned with the largest k whose U(k) fits the time left. For costs linear in k no call overruns;
    SAFETY covers prompts that grew since (each chunk re-reads a longer sequence). Before any call at batch >= m
    nothing bounds the next one (``max_steps`` returns None): the caller makes a short probe. ``bound=False``
    gives the expected time instead: the fit without the worst residual and the margin (one step count: the median),
    for an unmeasured batch interpolated linearly in m between the nearest batches measured below and above (a CPU's
    cost grows with the batch, a GPU's hardly: either is seen, not assumed); with none measured below, the fit over
    the larger batches, an upper estimate.
    """

    SAFETY = 1.2
    WINDOW = 16  # recent calls only: a machine's speed drifts

    def __init__(self) -> None:
        self._calls: deque[tuple[int, int, float]] = deque(maxlen=256)

    def record(self, batch: int, steps: int, seconds: float) -> None:
        if batch >= 1 and steps >= 1 and seconds >= 0:
            self._calls.append((batch, steps, seconds))

    def measured(self, batch: int) -> bool:
        """Whether a call at exactly this batch was seen."""
        return bool(self.step_counts(batch))

    def step_counts(self, batch: int) -> set[int]:
        """The step counts of the calls seen at exactly this batch."""
        return {k for m, k, _ in self._calls if m == batch}

    def _fit(self, batch: int, bound: bool) -> tuple[float, float, float] | None:
        """(a, b, floor) with t(k) = max(floor, a + b*k) before the margin -- the residual folded into a -- from the
        calls at this batch, or when there are none at larger batches; None when neither was seen. For the bound,
        a batch's own calls count only while one is among the last ``WINDOW`` calls: an old probe would miss a
        machine that has become busy since, which the larger batches' recent calls see."""
        recent = list(self._calls)[-self.WINDOW:] if bound else self._calls
        own = any(m == batch for m, _, _ in recent)
        seen = self._seen(batch, own)
        if not seen:
            return None
        if len({k for k, _ in seen}) == 1:
            times = sorted(t for _, t in seen)
            k0, t0 = seen[0][0], times[-1] if bound else times[len(times) // 2]
            if bound:
                return 0.0, t0 / k0, t0
            # expected: the call's overhead as the nearest batch measured at two lengths has it (t0 / k0 a step
            # would count the overhead k / k0 times in a call of k steps, and price this batch off its neighbours);
            # when that overhead is not below t0 (it grows with the batch: a prefill), its share of a k0-step call
            a = self._overhead(batch, k0, t0)
            return a, (t0 - a) / k0, 0.0
        a, b = self._line(seen)
        e = max(0.0, max(t - a - b * k for k, t in seen)) if bound else 0.0
        return a + e, b, 0.0

    def _seen(self, batch: int, own: bool) -> list[tuple[int, float]]:
        """(steps, seconds) of the last ``WINDOW`` calls at this batch (``own``), else at larger batches."""
        return [(k, t) for m, k, t in reversed(self._calls) if (m == batch if own else m >= batch)][: self.WINDOW]

    @staticmethod
    def _line(seen: list[tuple[int, float]]) -> tuple[float, float]:
        """(a, b) of t = a + b*k by least squares over calls of at least two step counts: b clamped to
        [0, min t/k], a >= 0."""
        n = len(seen)
        mk, mt = sum(k for k, _ in seen) / n, sum(t for _, t in seen) / n
        b = sum((k - mk) * (t - mt) for k, t in seen) / sum((k - mk) ** 2 for k, _ in seen)
        b = min(max(b, 0.0), min(t / k for k, t in seen))
        return max(0.0, mt - b * mk), b

    def _overhead(self, batch: int, steps: int, seconds: float) -> float:
        """The overhead of a call of ``steps`` steps that took ``seconds`` at ``batch``, from the batch nearest it
        whose recent calls have two step counts or more, with a' + b' k there: a' when a' < ``seconds``, else the
        same share of the call, ``seconds`` * a' / (a' + b' * ``steps``) (so a step never comes out free); 0 when no
        batch was measured at two lengths (the call is read as all steps)."""
        for m in sorted({m for m, _, _ in self._calls if m != batch}, key=lambda m: (abs(m - batch), m)):
            seen = self._seen(m, True)
            if len({k for k, _ in seen}) > 1:
                a, b = self._line(seen)
                if a < seconds:
                    return a
                return seconds * a / (a + b * steps) if b > 0 else 0.0  # b = 0: no split to copy
        return 0.0

    def _expected(self, batch: int, steps: int) -> float | None:
        """The expected time at exactly ``batch``: its own calls' fit, or interpolated between the nearest batches
        measured below and above; None unless both sides (or the batch itself) were measured."""
        def at(m: int) -> float:
            a, b, floor = self._fit(m, bound=False)  # type: ignore[misc]  # m was measured
            return max(floor, a + b * steps)

        batches = {m for m, _, _ in self._calls}
        if batch in batches:
            return at(batch)
        below, above = [m for m in batches if m < batch], [m for m in batches if m > batch]
        if not below or not above:
            return None
        lo, hi = max(below), min(above)
        return at(lo) + (at(hi) - at(lo)) * (batch - lo) / (hi - lo)

    def seconds(self, batch: int, steps: int, bound: bool = False, priced_only: bool = False) -> float | None:
        """U(``steps``) at ``batch`` (``bound=False``: the expected time); None when nothing measured it
        (``priced_only``: None also when no call at this batch or smaller was measured, so the value is not merely
        the upper estimate from larger batches)."""
        if not bound:
            t = self._expected(batch, steps)
            if t is not None or priced_only:
                return t
        fit = self._fit(batch, bound)
        if fit is None:
            return None
        a, b, floor = fit
        return (self.SAFETY if bound else 1.0) * max(floor, a + b * steps)

    def max_steps(self, batch: int, seconds: float, bound: bool = True) -> int | None:
        """The largest k with U(k) <= ``seconds`` (0: not even one step), or None when nothing bounds it.

        ``bound=False`` plans by the expected time instead, for a soft deadline that a slow moment may pass.
        """
        fit = self._fit(batch, bound)
        if fit is None:
            return None
        a, b, floor = fit
        allowed = seconds / self.SAFETY if bound else seconds
        if floor > allowed or a > allowed:
            return 0
        return UNBOUNDED if b <= 0 else math.floor((allowed - a) / b + 1e-9)  # 1e-9: k0 from t0 / (t0 / k0)


_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str, flag: str) -> float:
    """Seconds in ``5h``, ``6m``, ``90s``, ``1h30m``, ``1.5h`` or a plain number of seconds; must be > 0 (``-3m``
    is refused as not positive)."""
    t = str(text).strip().lower().replace(" ", "")
    body = t[1:] if t.startswith(("-", "+")) else t
    seconds: float | None = None
    try:
        seconds = float(body)
    except ValueError:
        m = _DURATION.fullmatch(body)
        if m and any(m.groups()):
            seconds = sum(float(v) * u for v, u in zip(m.groups(), _UNIT.values()) if v)
    if seconds is None:
        raise MathRecipeError(f"{flag} {text!r}: expected a duration such as 5h, 6m, 90s or 1h30m")
    if t.startswith("-") or not seconds > 0 or math.isinf(seconds) or math.isnan(seconds):
        raise MathRecipeError(f"{flag} must be a positive duration (such as 5h, 6m or 90s), got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``4h59m``, ``5m07s``, ``42s``: for progress lines."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
