"""The solving loop: problems one at a time, samples in waves, generated in chunks, under a clock.

A problem draws up to ``samples`` completions, in waves drawn in parallel. ``wave="auto"`` (the default) spends what
is scarce: without a clock, tokens -- each wave is the fewest samples that could settle the vote
(:func:`policy.next_wave`: 8 of 15 first, then what a split vote still needs), so no sample is drawn that stopping
would have spared; under a clock, time -- all samples at once, the rest cancelled when the vote is settled (the
second-placed AIMO-2 team's way): parallel samples cost little time, sequential waves cost a sample's time each.
``wave=k`` draws k at a time. Samples are generated ``chunk_tokens`` tokens at a time by the evaluation's
:class:`Generator` (the chunk's token ids are fed back as the next call's prompt, so the model sees one continuous
sequence). Between chunks the solver:

- ends samples: end-of-sequence, ``</think>`` (``stop_at_think``), the first complete box (``stop_at_first_box``),
  or ``max_new_tokens`` in all; an ended sample votes with its answer (``answers``);
- stops the problem once :func:`policy.vote_settled` says the vote is settled -- samples still in flight are
  cancelled, samples not started are never drawn -- or when all planned samples have voted;
- keeps the clock: a chunk is started only with as many steps as :class:`policy.CallTimes` bounds within the
  deadline (a chunk that would overrun is cut short, one that cannot fit is not started); when time is up, samples
  in flight vote with their last complete box, if any. Under a global time limit a problem's share of the time left is
  planned by the expected call time and the time limit's end by the bound: a slow call borrows from later shares, never
  past the end.

Why chunks: neither backend can cancel a request inside one ``generate`` call (vLLM's offline ``LLM.generate`` has
no cancellation; ``HFGenerator`` runs a batch until its longest sequence ends). Chunking is the cancellation: early
stopping and the deadline act at chunk boundaries, and the long tail of samples is never generated. The cost is
one call's overhead and a prefill of the sequence so far per chunk (cheap in vLLM with prefix caching; on the toy
model with transformers, one thread, a batch of 15: 0.14 s a call, 0.02 s a decode step), so a wave is one call
when nothing can act mid-wave -- waves of the fewest samples that could settle the vote, without a clock or
``stop_at_first_box`` -- and stopping acts between waves. Caveat for vLLM: ``VLLMGenerator`` gives every
prompt of a call the same seed, so continuation chunks of one wave share their random stream.

Problems are answered in file order (the competition serves them one at a time). Time share: with a global time limit
each problem may use its share of the time left (:func:`policy.time_share`), so time saved by early stops flows to
later problems. A wave is priced from the measured calls (:func:`policy.wave_seconds` of :func:`policy.typical_steps`,
the steps recent problems took to a first answer) for each number of samples; when behind, a problem plans the most
samples its share can buy (:func:`policy.planned_samples`: on a CPU, where a wave's cost grows with its samples, a
few samples that finish; on a GPU, where they cost the same, a third fewer), and a problem whose share cannot buy
even that borrows from later ones and stops at its first answer (:meth:`Solver.deadline`), so a slow machine answers
some problems rather than cutting every sample before it ends. A wave that started may run past its share to its
bound (the calls' worst recent moment), never past the time limit's end: cut at its expected time, a slow wave would
lose all it ran.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mathrecipe.errors import MathRecipeError
from mathrecipe.evaluate.generation import Generator, SamplingSettings
from mathrecipe.grading import boxed_spans, extract_answer
from mathrecipe.prompts import SYSTEM_PROMPT, THINK_END, batch_prompt_ids
from mathrecipe.solve.answers import INT_FORMAT, Tally, Vote, check_answer_format
from mathrecipe.solve.policy import (
    DECIDED,
    LEAD,
    CallTimes,
    next_wave,
    planned_samples,
    time_share,
    typical_steps,
    vote_settled,
    wave_seconds,
)

log = logging.getLogger(__name__)

PROBE_STEPS = 8  # the first chunk under a deadline, before any call has measured the machine's speed
WARM_UP_STEPS = 2  # the untimed first call: a backend's one-time costs, at the batch the first wave uses
USEFUL_VOTES = 1  # valid answers a wave is planned to reach: the first one (a problem cut before it scores nothing;
# on the toy, planning for 1 answered 30-31/40 on a loaded machine where planning for 3 answered 11-16)
CHUNKS_PER_SAMPLE = 8  # default chunk_tokens = ceil(max_new_tokens / this)
AUTO = "auto"  # wave: policy.next_wave
SHARES = ("adaptive", "equal")  # how a global time limit is shared among the problems

# why a problem stopped
ALL, TIME, NO_TIME = "all samples", "time", "no time"
SETTLED = (DECIDED, LEAD, ALL)  # stops that show how many decode steps a problem needed
# how a sample ended
EOS, THINK, FIRST_BOX, MAX_TOKENS, CANCELLED, CUT = "finished", "think", "first box", "max tokens", "cancelled", "time"


def default_chunk_tokens(max_new_tokens: int) -> int:
    """ceil(max_new_tokens / CHUNKS_PER_SAMPLE), at least 16: eight chances per sample to stop."""
    return max(16, math.ceil(max_new_tokens / CHUNKS_PER_SAMPLE))


@dataclass(frozen=True)
class SolveOptions:
    """How ``mathrecipe solve`` draws and stops (sampling itself is a :class:`SamplingSettings`)."""

    wave: int | str = "auto"  # samples per wave: "auto" (fewest that could settle; all under a clock) or a number
    chunk_tokens: int | None = None  # tokens per generate call; None: default_chunk_tokens(max_new_tokens)
    early_stop: bool = True  # stop a problem once the vote is settled
    min_lead: int | None = None  # also stop once the leader leads by this many votes
    stop_at_first_box: bool = False
    answer_format: str = INT_FORMAT
    time_limit_s: float | None = None  # all problems, shared (the clock starts at ``started_at``)
    per_problem_s: float | None = None  # each problem alone
    share: str = "adaptive"  # under time_limit_s: "adaptive" (time left / problems left, borrowing) or "equal"

    def __post_init__(self) -> None:
        check_answer_format(self.answer_format)
        def whole(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        if self.wave != AUTO and not whole(self.wave):
            raise MathRecipeError(f"--wave must be 'auto' or an integer >= 1, got {self.wave!r}")
        for flag, v in (("--chunk-tokens", self.chunk_tokens), ("--min-lead", self.min_lead)):
            if v is not None and not whole(v):
                raise MathRecipeError(f"{flag} must be an integer >= 1, got {v!r}")
        for flag, s in (("--time-limit", self.time_limit_s), ("--per-problem", self.per_problem_s)):
            if s is not None and not s > 0:
                raise MathRecipeError(f"{flag} must be a positive duration, got {s}")
        if self.share not in SHARES:
            raise MathRecipeError(f"--share must be one of {', '.join(SHARES)}, got {self.share!r}")
        if self.time_limit_s is not None and self.per_problem_s is not None:
            raise MathRecipeError("--time-limit and --per-problem are exclusive: give one (a global time limit "
                                  "shares "
                                  "its time among the problems; --per-problem gives each the same)")


@dataclass
class Sample:
    ids: list[int] = field(default_factory=list)
    text: str = ""
    end: str | None = None  # how it ended; None while in flight
    answer: str | None = None  # the extracted answer it voted with
    vote: Vote | None = None

    def log(self) -> dict[str, Any]:
        return {"tokens": len(self.ids), "end": self.end, "answer": self.answer}


@dataclass
class ProblemResult:
    id: str
    answer: Vote | None
    stop: str  # decided | lead | all samples | time | no time
    planned: int  # samples planned (fewer than --samples when behind)
    samples: list[Sample]
    tally: Tally
    seconds: float
    calls: int

    @property
    def tokens(self) -> int:
        return sum(len(s.ids) for s in self.samples)

    def row(self) -> dict[str, Any]:
        """The solve.jsonl row."""
        return {"id": self.id, "answer": self.answer, "stop": self.stop, "votes": self.tally.as_dict(),
                "invalid": self.tally.invalid, "samples": len(self.samples), "planned": self.planned,
                "tokens": self.tokens, "seconds": round(self.seconds, 3), "calls": self.calls,
                "sample_log": [s.log() for s in self.samples]}


def _ended(s: Sample, settings: SamplingSettings, opts: SolveOptions, finished: bool) -> str | None:
    """How ``s`` ended after its latest chunk (None: still going). Cuts its text after a stop, as generation does."""
    if opts.stop_at_first_box:
        spans = [(c, e) for c, e in boxed_spans(s.text) if c]
        think = s.text.find(THINK_END) if settings.stop_at_think else -1
        if spans and (think < 0 or spans[0][1] <= think):
            s.text = s.text[: spans[0][1]]
            s.answer = spans[0][0]
            return FIRST_BOX
    if settings.stop_at_think:
        pos = s.text.find(THINK_END)
        if pos >= 0:
            s.text = s.text[: pos + len(THINK_END)]
            s.answer = extract_answer(s.text)
            return THINK
    if finished or len(s.ids) >= settings.max_new_tokens:
        s.answer = extract_answer(s.text)
        return EOS if finished else MAX_TOKENS
    return None


class Solver:
    """Answers problems one at a time with a :class:`Generator` (see the module docstring for the rules).

    ``clock`` is injectable (tests drive a simulated one); ``started_at`` is when the global time limit started (the
    command passes its process's start, so imports and loading count, as in the competition); default: the first
    ``solve`` call. ``reserve_s`` is kept back at the time limit's end (the command's last write and exit).
    """

    def __init__(self, generator: Generator, tokenizer: Any, settings: SamplingSettings, options: SolveOptions,
                 system_prompt: str | None = SYSTEM_PROMPT, clock: Callable[[], float] = time.monotonic,
                 started_at: float | None = None, grader: Any = None, reserve_s: float = 0.0) -> None:
        self.gen, self.tok, self.settings, self.opts = generator, tokenizer, settings, options
        self.system_prompt, self.clock, self.grader = system_prompt, clock, grader
        self.started_at, self.reserve_s = started_at, reserve_s
        self.times = CallTimes()
        self.chunk = default_chunk_tokens(settings.max_new_tokens)
        self.steps_needed: deque[int] = deque(maxlen=32)  # decode steps recent problems took to a first answer
        self.last_cut = False  # the last problem ran out of time
        self.warm = False
        self.equal_share: float | None = None  # share="equal": each problem's share, fixed at the first problem
        self.share_end: float | None = None  # the planned problem's share ends (adaptive share)

    # ------------------------------------------------------------------------------------------ the time limit

    def end(self) -> float:
        """When the global time limit's time for generating ends (its end less ``reserve_s``); inf without one."""
        if self.opts.time_limit_s is None:
            return math.inf
        assert self.started_at is not None
        return self.started_at + self.opts.time_limit_s - self.reserve_s

    def chunk_for(self, deadline: float) -> int:
        """Decode steps per generate call (see :meth:`solve_one`)."""
        opts, s = self.opts, self.settings
        fewest = opts.wave == AUTO and deadline == math.inf
        return opts.chunk_tokens or (s.max_new_tokens if fewest and not opts.stop_at_first_box else self.chunk)

    def deadline(self, problems_left: int) -> tuple[float, float, int]:
        """(soft deadline, hard deadline, samples to plan) for the next problem.

        Both clocks plan alike: ``steps`` = :func:`policy.typical_steps` of the decode steps recent problems took to
        a first answer (``USEFUL_VOTES`` valid answers, or their stop when that came first), ``need(m)`` = what a wave
        of m samples running that many steps takes at the calls' current speed (:func:`policy.wave_seconds`), and
        N samples when the share covers ``need(N)``, else the most the share can buy, at most a third fewer
        (:func:`policy.planned_samples`, which also cuts after a problem ran out of time). A wave cut at its share
        after an answer answers by plurality; one cut before any sample ended answers nothing.

        --per-problem: the share is fixed; both deadlines are its end. --time-limit: the share is the time left /
        problems left; the soft deadline ends the share -- or, when a wave needs more to reach an answer, ends
        that wave, and a wave slower than expected runs on to its bound (:meth:`soft_deadline`: borrowed from later
        shares, which shrink to repay it, so some problems are answered rather than all cut before any sample
        writes its answer; the last ones get what is left, or nothing). A borrowing problem stops at its first
        answer once its share is over (``share_end``). The hard deadline is the time limit's end (:meth:`end`),
        kept by the bound. No clock: both infinite.
        """
        self.share_end = None
        now, n = self.clock(), self.settings.samples
        if self.opts.per_problem_s is not None:
            share, end = self.opts.per_problem_s, now + self.opts.per_problem_s
        elif self.opts.time_limit_s is not None:
            end = self.end()
            if self.opts.share == "equal":  # a baseline: the same share for every problem, fixed when solving began
                if self.equal_share is None:
                    self.equal_share = time_share(end - now, problems_left)
                share = self.equal_share
            else:
                share = time_share(end - now, problems_left)
        else:
            return math.inf, math.inf, n
        planned = planned_samples(n, share, self.costs(n, end), self.last_cut)
        if self.opts.per_problem_s is not None:
            return end, end, planned
        if self.opts.share == "equal":
            return min(end, now + share), end, planned
        self.share_end = now + share
        return self.soft_deadline(now, share, planned), end, planned

    def need(self, samples: int, deadline: float, bound: bool = False, priced_only: bool = False) -> float | None:
        """Expected seconds (``bound``: the bound on the seconds) a wave of ``samples`` needs now to reach a first
        answer (None: no call measured yet; ``priced_only``: see :meth:`policy.CallTimes.seconds`)."""
        steps = typical_steps(self.steps_needed, self.settings.max_new_tokens)
        return wave_seconds(self.times, samples, steps, self.chunk_for(deadline), bound, priced_only)

    def wave_size(self, samples: int) -> int:
        """Samples per wave when ``samples`` are planned: all at once under ``wave="auto"``, else at most k."""
        return samples if self.opts.wave == AUTO else min(int(self.opts.wave), samples)

    def costs(self, samples: int, deadline: float) -> list[float | None]:
        """What 1, 2, ..., ``samples`` samples are expected to take now (None: not priced yet), for
        :func:`policy.planned_samples`: one wave of m to its first answer under ``wave="auto"``; ceil(m / k) such
        waves of at most k under ``wave=k``."""
        out: list[float | None] = []
        for m in range(1, samples + 1):
            w = self.wave_size(m)
            one = self.need(w, deadline, priced_only=True)
            out.append(None if one is None else math.ceil(m / w) * one)
        return out

    def soft_deadline(self, start: float, share: float, samples: int) -> float:
        """Under a global time limit: when a problem that started at ``start`` with its ``share`` stops starting
        calls. Whether to borrow is judged by the expected time of a wave of ``samples``: when it exceeds the share
        but the wave is expected to end before the time limit does, the wave gets its time, borrowed from later
        problems; when even that passes the time limit's end, it gets its share only (borrowing time that cannot buy
        an answer would starve the problems after it). How long a wave that started may run is its bound (:meth:`need`
        with ``bound``: the recent calls' worst moment, and the margin): a wave cut a few steps before its answer
        wastes all it ran -- measured on the toy beside two busy loops, a deadline at the expected time cut 26 of 71
        waves with no answer. The price: a wave that needs more steps than the typical one also runs to its bound
        before it is cut, and one that borrows when little is left may take all of it (the last problems get
        nothing). A bound that one slow call inflated only lets slow waves run longer (a wave ends when its
        samples do); it never decides whether to borrow, where it would refuse every later problem."""
        end = self.end()
        wave = self.wave_size(samples)
        need = self.need(wave, end)
        if need is None:
            return min(end, start + share)
        if need > share and start + need > end:
            return min(end, start + share)
        bound = self.need(wave, end, bound=True)
        return min(end, start + max(share, need, bound or 0.0))

    def time_left(self) -> float | None:
        """Seconds left of the global time limit (None without one)."""
        if self.opts.time_limit_s is None or self.started_at is None:
            return None
        return self.started_at + self.opts.time_limit_s - self.clock()

    def _generate(self, prompts: list[list[int]], settings: SamplingSettings, limit_s: float) -> Any:
        """``generator.generate``; with a finite ``limit_s``, transformers' own ``max_time`` criterion on an HF model
        ends the call there even when a slow moment makes it overrun its bound (it returns what it has)."""
        config = getattr(getattr(self.gen, "model", None), "generation_config", None)
        if config is None or limit_s == math.inf:
            return self.gen.generate(prompts, settings)
        before = getattr(config, "max_time", None)
        config.max_time = max(0.0, limit_s)
        try:
            return self.gen.generate(prompts, settings)
        finally:
            config.max_time = before

    def calibrate_cpu_threads(self, prompt: list[int]) -> dict[str, Any] | None:
        """On CPU (an HF model), keep torch's intra-op threads only when they make generation faster: time a probe
        call (``PROBE_STEPS`` steps at the wave's batch) on one thread and on torch's default, keep the faster per
        step. Measured on a loaded 2-core machine with the toy model: 0.24 s on one thread, 0.8-6 s on two (each
        thread's barrier waits on the other being scheduled). The probe at the kept count is the first call the
        time bound knows (and the warm-up); returns what was measured, or None (no CPU model, or one thread).
        """
        import torch

        model = getattr(self.gen, "model", None)
        param = next(iter(model.parameters()), None) if model is not None else None
        n = torch.get_num_threads()
        if param is None or param.device.type != "cpu" or n <= 1:
            return None
        batch = self.settings.samples

        def call(threads: int, steps: int, limit: float) -> tuple[float, int]:
            torch.set_num_threads(threads)
            t = self.clock()
            out = self._generate([prompt], dataclasses.replace(self.settings, max_new_tokens=steps), limit)[0]
            return self.clock() - t, max(1, max((len(o.token_ids) for o in out), default=1))

        end = self.end()
        call(1, WARM_UP_STEPS, end - self.clock())  # one-time costs: not timed
        t1, k1 = call(1, PROBE_STEPS, end - self.clock())
        call(n, WARM_UP_STEPS, min(t1, end - self.clock()))  # the thread pool's start: not timed, bounded
        tn, kn = call(n, PROBE_STEPS, min(2 * t1, end - self.clock()))  # no slower than twice one thread's time
        best = 1 if t1 / k1 <= tn / kn else n
        torch.set_num_threads(best)
        self.times.record(batch, *((k1, t1) if best == 1 else (kn, tn)))
        self.warm = True
        return {"threads": best, "default": n, "per_step_s": {"1": t1 / k1, str(n): tn / kn}}

    def price_waves(self, prompt: list[int]) -> None:
        """Time a short call (``PROBE_STEPS`` steps) of one sample and of a whole wave where neither was measured, so
        that the first problem knows what its cheapest and its fullest wave cost (:func:`policy.planned_samples`;
        between them, the price is interpolated) instead of spending problems to learn it. Each is skipped when the
        time limit's end has come."""
        for batch in dict.fromkeys((1, self.wave_size(self.settings.samples))):
            left = self.end() - self.clock()
            if left <= 0 or self.times.measured(batch):
                continue
            c0 = self.clock()
            out = self._generate([prompt], dataclasses.replace(self.settings, samples=batch,
                                                               max_new_tokens=PROBE_STEPS), left)[0]
            ran = max((len(o.token_ids) for o in out), default=0)
            if ran:  # a call cut before its first token (max_time) says nothing about a step's cost
                self.times.record(batch, ran, self.clock() - c0)

    # ------------------------------------------------------------------------------------------ a problem

    def solve(self, problems: Sequence[Mapping[str, Any]],
              on_problem: Callable[[ProblemResult], None] | None = None,
              on_call: Callable[[], None] | None = None,
              prompts: Sequence[list[int]] | None = None) -> list[ProblemResult]:
        """Answer ``problems`` (dicts with ``id`` and ``problem``) in order; ``on_problem`` after each one.
        ``prompts``: their token ids when the caller has them already (default: ``prompts.batch_prompt_ids``)."""
        if self.started_at is None:
            self.started_at = self.clock()
        ids = (list(prompts) if prompts is not None
               else batch_prompt_ids(self.tok, [str(p["problem"]) for p in problems], self.system_prompt))
        clocked = self.opts.time_limit_s is not None or self.opts.per_problem_s is not None
        if ids and clocked and not self.warm:
            # A backend's first call pays one-time costs (lazy initialisation, allocator, kernels, a cache at the
            # wave's batch): measured, it would make the time bound think every call that slow. Not timed (the
            # time limit still pays); skipped when even that would pass the time limit's end.
            if self.end() - self.clock() > 0:
                warm_up = dataclasses.replace(self.settings, samples=self.wave_size(self.settings.samples),
                                              max_new_tokens=WARM_UP_STEPS)
                self._generate(ids[:1], warm_up, self.end() - self.clock())
            self.warm = True
        if ids and clocked:
            self.price_waves(ids[0])
        results = []
        for i, (p, prompt) in enumerate(zip(problems, ids)):
            start = self.clock()
            blind = self.need(self.wave_size(self.settings.samples), self.end()) is None
            soft, hard, planned = self.deadline(len(problems) - i)
            replan = None
            if blind and self.opts.time_limit_s is not None and self.opts.share != "equal":
                # planned before any call was measured: re-planned once the probe has measured one
                replan = functools.partial(self.soft_deadline, start, soft - start, planned)
            r = self.solve_one(str(p["id"]), prompt, planned, soft, hard, on_call, replan, self.share_end)
            results.append(r)
            if on_problem:
                on_problem(r)
        return results

    def solve_one(self, pid: str, prompt: list[int], planned: int, deadline: float = math.inf,
                  hard_deadline: float | None = None, on_call: Callable[[], None] | None = None,
                  replan: Callable[[], float] | None = None, enough_at: float | None = None) -> ProblemResult:
        """One problem: at most ``planned`` samples; calls planned to end by ``deadline`` (expected time) and by
        ``hard_deadline`` (bounded time; default: ``deadline`` itself, bounded). ``replan``: the soft deadline
        again after the first call (a plan made before any call was measured). ``enough_at``: from then on an
        answer (``USEFUL_VOTES`` valid ones) ends the problem (its share is over; the rest was borrowed)."""
        s, opts = self.settings, self.opts
        soft = hard_deadline is not None and hard_deadline != deadline
        hard_deadline = deadline if hard_deadline is None else hard_deadline
        fewest = opts.wave == AUTO and deadline == math.inf  # under a clock, auto draws all at once
        # chunks exist so that something can act mid-wave: the clock, the first box, a settled vote (which cannot
        # happen inside a wave of the fewest samples that could settle it)
        chunk = self.chunk_for(deadline)
        t0 = self.clock()
        tally = Tally(opts.answer_format, self.grader)
        samples: list[Sample] = []
        flight: list[Sample] = []
        wave = planned if opts.wave == AUTO else min(int(opts.wave), planned)
        calls, steps, stop = 0, 0, None
        useful: int | None = None  # decode steps when USEFUL_VOTES valid answers were in
        while True:
            done = sum(1 for x in samples if x.end is not None)
            if done >= planned:
                stop = ALL
            elif opts.early_stop:  # "decided"/"lead" only name stops that left samples undrawn
                stop = vote_settled(tally.counts, planned - done, opts.min_lead)
            if stop:
                break
            fresh = not flight
            if fresh:  # a new wave
                left = planned - len(samples)
                size = next_wave(tally.counts, left, opts.min_lead) if fewest else min(wave, left)
                flight = [Sample() for _ in range(size)]
            k = min(chunk, s.max_new_tokens - len(flight[0].ids))  # in-flight samples are equally long
            if hard_deadline != math.inf:
                now = self.clock()
                fits = self.times.max_steps(len(flight), hard_deadline - now)
                if soft and fits is not None:
                    fits = min(fits, self.times.max_steps(len(flight), deadline - now, bound=False) or 0)
                k = min(k, PROBE_STEPS) if fits is None else min(k, fits)
                if hard_deadline <= now:  # nothing measured bounds a probe, but the end has come
                    k = 0
                if k < 1:  # not even one step fits: a new wave is not started, one in flight is cut
                    stop = TIME if samples else NO_TIME
                    if fresh:
                        flight = []
                    break
            if fresh:
                samples += flight
            seed = (s.seed + zlib.crc32(f"{pid}/{calls}".encode())) % 2**31
            call = dataclasses.replace(s, max_new_tokens=k, seed=seed)
            limit = hard_deadline - self.clock()
            c0 = self.clock()
            if fresh:  # one prompt, n samples: every backend gives each its own random stream
                outs = self._generate([prompt], dataclasses.replace(call, samples=len(flight)), limit)[0]
            else:
                outs = [o[0] for o in self._generate([prompt + x.ids for x in flight],
                                                     dataclasses.replace(call, samples=1), limit)]
            ran = max((len(o.token_ids) for o in outs), default=0)
            self.times.record(len(flight), ran, self.clock() - c0)
            calls, steps = calls + 1, steps + ran
            for x, o in zip(flight, outs):
                x.ids += o.token_ids
                x.text = self.tok.decode(x.ids, skip_special_tokens=True)
                x.end = _ended(x, s, opts, o.finished)
                if x.end is not None:
                    x.vote = tally.add(x.answer)
            flight = [x for x in flight if x.end is None]
            if useful is None and tally.votes >= min(USEFUL_VOTES, planned):
                useful = steps
            if useful is not None and enough_at is not None and flight and self.clock() >= enough_at:
                stop = TIME  # borrowed time buys an answer, not a settled vote
                if on_call:
                    on_call()
                break
            if replan is not None and soft:
                deadline, replan = replan(), None
            if on_call:
                on_call()
            if ran < k and flight and self.clock() >= hard_deadline:
                stop = TIME  # the call was ended by its time limit: the time limit's end has come
                break
        for x in flight:  # still in flight when the problem stopped
            if stop == TIME:  # out of time: a box already written is the best guess this sample has
                x.end, x.answer = CUT, extract_answer(x.text)
                if x.answer is not None:
                    x.vote = tally.add(x.answer)
            else:
                x.end = CANCELLED
        seconds = self.clock() - t0
        self.last_cut = stop in (TIME, NO_TIME)
        if useful is not None or stop in SETTLED:
            self.steps_needed.append(steps if useful is None else useful)
        elif steps:  # cut before an answer: it needed more than it got -- left out, the problems that were lucky
            # enough to vote early would make the estimate ever shorter and every problem cut the same way
            self.steps_needed.append(min(s.max_new_tokens, 2 * steps))
        return ProblemResult(pid, tally.winner(), stop, planned, samples, tally, seconds, calls)
