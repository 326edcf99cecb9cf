import itertools
import json
import math
import random

import pytest

from mathrecipe.cli import main as _mathrecipe_main
from mathrecipe.evaluate.generation import Completion, SamplingSettings
from mathrecipe.prompts import THINK_END, prompt_tokens
from mathrecipe.solve import cli as solve_cli
from mathrecipe.solve import solver as solver_module
from mathrecipe.solve.answers import Tally, int_answer
from mathrecipe.solve.cli import read_problems
from mathrecipe.solve.policy import (
    CallTimes,
    next_wave,
    parse_duration,
    planned_samples,
    time_share,
    vote_settled,
)
from mathrecipe.solve.solver import SolveOptions, Solver


def main(argv):
    """``mathrecipe solve ARGV``: solve is a subcommand of the one ``mathrecipe`` main."""
    return _mathrecipe_main(["solve", *argv])

# ------------------------------------------------------------------------------------------ the stopping rule


def first_stop(votes, total, min_lead=None):
    """Replay votes (None = invalid) one at a time; (index after which the rule stops, why) or (None, None)."""
    counts = {}
    for i, v in enumerate(votes, 1):
        if v is not None:
            counts[v] = counts.get(v, 0) + 1
        why = vote_settled(list(counts.values()), total - i, min_lead)
        if why:
            return i, why
    return None, None


@pytest.mark.parametrize("votes,total,stop_at", [
    ("AAA", 5, 3),  # 3 > 0 + 2
    ("AAAA", 7, 4),  # 4 > 0 + 3: a majority of 7
    ("AAA", 7, None),  # 3 of 7 could still lose: 3 > 0 + 4 fails
    ("ABAA", 5, 4),  # 3 > 1 + 1
    ("ABAB", 5, None),  # tied with one left
    ("ABABA", 5, 5),  # the last vote decides
    ("A-AA", 5, 4),  # an invalid vote uses up a sample: 3 > 0 + 1
    ("AAAAAAAA", 15, 8),  # AIMO's 15 samples: 8 agreeing settle it
    ("AAAAAAA", 15, None),
    ("ABCABCA", 7, 7),
])
def test_rule_stops_exactly_when_decided(votes, total, stop_at):
    seq = [None if c == "-" else c for c in votes]
    assert first_stop(seq, total)[0] == stop_at


def winners_of_all_completions(counts, remaining, labels):
    """Every possible final plurality outcome: the set of strict winners (None for a tie at the top)."""
    out = set()
    for rest in itertools.product(labels + ["new", None], repeat=remaining):
        c = dict(counts)
        for v in rest:
            if v is not None:
                c[v] = c.get(v, 0) + 1
        ranked = sorted(c.values(), reverse=True) + [0, 0]
        out.add(None if ranked[0] == ranked[1] else max(c, key=c.get))
    return out


def test_rule_is_exactly_cannot_be_overturned():
    """Exhaustive, N <= 6: "decided" iff every way the remaining samples can vote leaves the same strict winner."""
    labels = ["A", "B", "C"]
    for total in range(1, 7):
        for drawn in range(0, total + 1):
            for votes in itertools.product(labels + [None], repeat=drawn):
                counts = {}
                for v in votes:
                    if v is not None:
                        counts[v] = counts.get(v, 0) + 1
                finals = winners_of_all_completions(counts, total - drawn, labels)
                sure = len(finals) == 1 and None not in finals
                assert (vote_settled(list(counts.values()), total - drawn) == "decided") == sure, (votes, total)


def test_min_lead_stops_earlier_and_says_so():
    assert first_stop(list("AAAA"), 15) == (None, None)
    assert first_stop(list("ABAAA"), 15, min_lead=3) == (5, "lead")
    assert first_stop(list("AAAAAAAA"), 15, min_lead=20) == (8, "decided")  # the sure rule still applies
    with pytest.raises(ValueError):
        vote_settled([1], 3, min_lead=0)


def test_next_wave_is_the_fewest_samples_that_could_settle():
    """Exhaustive: the wave is the smallest y whose y agreeing votes would settle the vote (all remaining when none
    would), and never a sample more."""
    for remaining in range(1, 9):
        for counts in [[], [1], [2, 1], [3, 3], [4], [2, 2, 1], [5, 1]]:
            for lead in (None, 2, 3):
                y = next_wave(counts, remaining, lead)
                settles = [vote_settled([counts[0] + k if counts else k, *counts[1:]], remaining - k, lead)
                           for k in range(1, remaining + 1)]
                want = next((k for k, s in enumerate(settles, 1) if s), remaining)
                assert y == want, (counts, remaining, lead, y, want)
    assert next_wave([], 15) == 8 and next_wave([], 8) == 5


# ------------------------------------------------------------------------------------------ answers


@pytest.mark.parametrize("raw,vote", [
    ("\\boxed{1,000}"[7:-1], 0),  # thousands separator -> 1000 -> mod 1000
    ("1{,}000", 0),
    ("12.0", 12),
    ("-3", None),  # negative: invalid, no reduction repairs a negative remainder
    ("\\frac{6}{3}", 2),
    ("\\dfrac{12}{4}", 3),
    ("\\frac{7}{2}", None),
    ("12.5", None),
    ("025", 25),
    ("2024", 24),
    ("999", 999),
    ("$42$", 42),
    ("\\text{42}", 42),
    ("n = 42", 42),
    ("42^\\circ", 42),
    ("1,2", None),
    ("2^{10}", None),
    ("\\sqrt{2}", None),
    ("", None),
    (None, None),
])
def test_int_answer(raw, vote):
    assert int_answer(raw) == vote


def test_tally_int_pools_by_value_and_counts_invalid():
    t = Tally("int0-999")
    for raw in ["12", "12.0", "\\frac{24}{2}", "7", "x", "-3", "7"]:
        t.add(raw)
    assert t.as_dict() == {"12": 3, "7": 2} and t.invalid == 2 and t.winner() == 12
    tie = Tally("int0-999")
    for raw in ["5", "6", "6", "5"]:
        tie.add(raw)
    assert tie.winner() == 5  # a tie goes to the answer seen first


def test_tally_any_pools_by_grader_equivalence():
    t = Tally("any")
    for raw in ["\\frac{1}{2}", "0.5", "1/2", "\\sqrt{2}"]:
        t.add(raw)
    assert t.as_dict() == {"\\frac{1}{2}": 3, "\\sqrt{2}": 1}


# ------------------------------------------------------------------------------------------ clock rules


def test_durations():
    assert parse_duration("5h", "--time-limit") == 18000
    assert parse_duration("6m", "--per-problem") == 360
    assert parse_duration("1h30m", "--time-limit") == 5400
    assert parse_duration("90s", "--time-limit") == 90
    assert parse_duration("300", "--time-limit") == 300
    for bad in ("5x", "h", "-5m", "0", ""):
        with pytest.raises(solve_cli.MathRecipeError, match="--time-limit"):
            parse_duration(bad, "--time-limit")


def test_share_and_samples_when_behind():
    assert time_share(300, 3) == 100
    assert time_share(-5, 2) == 0
    flat = [300.0] * 15  # a GPU: parallel samples cost the same
    cpu = [0.1 * m for m in range(1, 16)]  # a CPU: a wave's cost grows with its samples
    assert planned_samples(15, 600, [None] * 15) == 15  # nothing priced yet
    assert planned_samples(15, 600, [None] * 15, last_cut=True) == 10
    assert planned_samples(15, 600, flat) == 15  # the share covers a wave of all 15
    assert planned_samples(15, 290, flat) == 10  # behind, all cost the same: the AIMO-2 team's 15 -> 10
    assert planned_samples(15, 600, flat, last_cut=True) == 10  # the last problem ran out of time
    assert planned_samples(15, 1.5, cpu) == 15
    assert planned_samples(15, 0.75, cpu) == 7  # the most samples the share buys
    assert planned_samples(15, 1.2, cpu) == 10  # ... at most a third fewer
    assert planned_samples(15, 0.05, cpu) == 1  # not even one fits: as many as cost what one does (borrowing)
    assert planned_samples(15, 0.05, [0.1, 0.105, 0.108, 0.2] + [0.3] * 11) == 3
    assert planned_samples(15, 0.05, [None] * 14 + [0.3]) == 1  # one sample unpriced: the wave that prices it
    assert planned_samples(15, 0.25, [None, 0.2] + [0.3] * 13) == 2  # what is priced and fits
    assert planned_samples(1, 1, [300.0]) == 1
    with pytest.raises(ValueError, match="one price per wave size"):
        planned_samples(15, 1, [0.1])


def test_call_bound_holds_for_linear_costs():
    """Calls cost a + b*k (a, b unknown to it); every k it allows fits."""
    for a, b in [(0.5, 0.01), (0.0, 0.2), (2.0, 0.001)]:
        times = CallTimes()
        assert times.max_steps(4, 10.0) is None  # nothing measured: no bound
        for k in (8, 64, 64):
            times.record(4, k, a + b * k)
        for left in (0.1, a + b * 3, a + b * 64, 5.0, 50.0):
            k = times.max_steps(4, left)
            assert k >= 0 and (k == 0 or a + b * k <= left), (a, b, left, k)
        assert times.max_steps(8, 50.0) is None  # a bigger batch than any measured is not bounded
    times = CallTimes()
    times.record(4, 64, 1.0)
    assert times.max_steps(2, 0.5) == 0  # a smaller call may cost as much as the one measured
    times.record(4, 64, 2.0)  # the machine got slower: the slow call bounds, not the fast one
    assert times.max_steps(4, 2.4) == 64 and times.max_steps(4, 1.8) == 0


def test_a_wave_is_priced_per_batch_size():
    """Calls cost a_m + b_m * k at batch m; a batch never measured is interpolated between its measured neighbours."""
    times = CallTimes()
    for k in (20, 40):
        times.record(1, k, 0.02 + 0.004 * k)  # one sample
        times.record(9, k, 0.1 + 0.02 * k)  # nine: each adds to a step's time, as on a CPU
    assert times.seconds(1, 30) == pytest.approx(0.14)
    assert times.seconds(9, 30) == pytest.approx(0.7)
    assert times.seconds(5, 30) == pytest.approx(0.42)  # halfway between 1 and 9
    assert times.seconds(5, 30, priced_only=True) == pytest.approx(0.42)
    assert times.seconds(12, 30) is None  # larger than any measured: not priced
    # the bound at a measured batch comes from its own calls: the larger batch's costlier calls are not slow moments
    assert times.max_steps(1, 0.2) == 36  # 1.2 * (0.02 + 0.004 k) <= 0.2
    only_large = CallTimes()
    for k in (20, 40):
        only_large.record(9, k, 0.1 + 0.02 * k)
    assert only_large.seconds(1, 30) == pytest.approx(0.7)  # an upper estimate from the larger batch ...
    assert only_large.seconds(1, 30, priced_only=True) is None  # ... which does not price a wave of one
    # an old call at a batch stops bounding it once WINDOW newer calls were made: the machine may be busier now
    for _ in range(CallTimes.WINDOW):
        times.record(9, 40, 0.1 + 0.02 * 40)
    assert times.max_steps(1, 0.2) < 36
    assert times.seconds(1, 30) == pytest.approx(0.14)  # the expected price keeps it


# ------------------------------------------------------------------------------------------ the solver


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Scripted:
    """A Generator that writes given completions, chunk by chunk, and advances a fake clock by call_s + (step_s +
    sample_step_s x the call's sequences) per decode step of the call (the longest sequence in it): sample_step_s = 0
    is a GPU's parallel samples, > 0 a CPU's. ``plan[problem text]`` lists the completions in the order samples are
    drawn; each ends with end-of-sequence."""

    def __init__(self, tokenizer, plan, clock=None, call_s=0.05, step_s=0.01, sample_step_s=0.0):
        self.tok, self.clock, self.call_s, self.step_s = tokenizer, clock, call_s, step_s
        self.sample_step_s = sample_step_s
        self.scripts = {p: [tokenizer.encode(t, add_special_tokens=False) for t in texts] for p, texts in plan.items()}
        self.next = {p: 0 for p in plan}
        self.running = {}  # tuple(prompt + generated so far) -> full script
        self.calls = []

    def _problem(self, prompt):
        text = self.tok.decode(prompt)
        return next(p for p in self.scripts if p in text)

    def _emit(self, prompt, script, done, k, stop_at_think=False):
        chunk = script[done: done + k]
        finished = done + len(chunk) >= len(script)
        if stop_at_think:  # as HFGenerator's stop string: the call ends at </think>, not at its chunk's end
            before = THINK_END in self.tok.decode(script[:done])
            at = None if before else next(
                (j for j in range(1, len(chunk) + 1) if THINK_END in self.tok.decode(script[: done + j])), None)
            if at is not None:
                chunk, finished = chunk[:at], True
        self.running[tuple(prompt) + tuple(script[: done + len(chunk)])] = (len(prompt), script)
        return Completion(self.tok.decode(chunk), list(chunk), finished)

    def generate(self, prompts, settings, on_progress=None):
        out, steps = [], 0
        for prompt in prompts:
            if tuple(prompt) in self.running:  # a continuation: prompt = the problem's prompt + generated so far
                n, script = self.running[tuple(prompt)]
                out.append([self._emit(prompt[:n], script, len(prompt) - n, settings.max_new_tokens,
                                       settings.stop_at_think)])
            else:
                p = self._problem(prompt)
                row = []
                for _ in range(settings.samples):
                    script = self.scripts[p][self.next[p] % len(self.scripts[p])]
                    self.next[p] += 1
                    row.append(self._emit(prompt, script, 0, settings.max_new_tokens, settings.stop_at_think))
                out.append(row)
            steps = max([steps] + [len(c.token_ids) for c in out[-1]])
        self.calls.append((len(prompts), settings.samples, settings.max_new_tokens))
        if self.clock is not None:
            rows = sum(len(r) for r in out)
            self.clock.now += self.call_s + (self.step_s + self.sample_step_s * rows) * steps
        return out


def trace(answer, pad=0):
    # scripts that differ must differ in their first tokens: the fake tells continuations apart by their ids
    return f"<think>\n{pad} {answer}\n" + "Wait, let me verify.\n" * pad + f"\\boxed{{{answer}}}\n</think>\nThe answer is \\boxed{{{answer}}}."


def settings(**kw):
    base = dict(samples=5, temperature=1.0, max_new_tokens=200, stop_at_think=True)
    return SamplingSettings(**{**base, **kw})


def problems(n):
    return [{"id": f"p{i}", "problem": f"Compute problem {i}."} for i in range(n)]


def test_early_stop_cancels_the_tail_and_keeps_the_answer(tiny_tokenizer):
    # 3 short agreeing samples finish first; two long ones (one disagreeing) are still running
    plan = {"problem 0": [trace(42), trace(42, 1), trace(42, 2), trace(7, 12), trace(42, 12)]}
    runs = {}
    for early in (True, False):
        gen = Scripted(tiny_tokenizer, plan)
        solver = Solver(gen, tiny_tokenizer, settings(), SolveOptions(wave=5, chunk_tokens=8, early_stop=early))
        runs[early] = solver.solve(problems(1))[0]
    stopped, full = runs[True], runs[False]
    assert stopped.answer == full.answer == 42
    assert stopped.stop == "decided" and full.stop == "all samples"
    assert full.tally.as_dict() == {"42": 4, "7": 1}
    assert stopped.tally.as_dict() == {"42": 3}
    assert [s.end for s in stopped.samples].count("cancelled") == 2
    assert stopped.tokens < 0.6 * full.tokens
    # the samples it kept are token for token the ones the full run drew
    assert [s.ids for s in stopped.samples[:3]] == [s.ids for s in full.samples[:3]]


def test_waves_stop_between_waves(tiny_tokenizer):
    plan = {"problem 0": [trace(5)] * 9}
    gen = Scripted(tiny_tokenizer, plan)
    solver = Solver(gen, tiny_tokenizer, settings(samples=9, max_new_tokens=40),
                    SolveOptions(wave=3, chunk_tokens=40))
    r = solver.solve(problems(1))[0]
    assert (r.answer, r.stop, len(r.samples)) == (5, "decided", 6)  # 3 + 3 agree; 6 > 0 + 3: no third wave
    assert [c[1] for c in gen.calls] == [3, 3]


def test_auto_waves_draw_only_what_could_settle(tiny_tokenizer):
    plan = {"problem 0": [trace(5), trace(5), trace(5), trace(5), trace(6), trace(5), trace(6), trace(5)]}
    runs = {}
    for early in (True, False):
        gen = Scripted(tiny_tokenizer, plan)
        r = Solver(gen, tiny_tokenizer, settings(samples=8, max_new_tokens=40),
                   SolveOptions(chunk_tokens=40, early_stop=early)).solve(problems(1))[0]
        runs[early] = (r, [c[1] for c in gen.calls])
    (stopped, waves), (full, full_waves) = runs[True], runs[False]
    # 5 first (4-1 after it), then 1: 5 > 1 + 2 settles it
    assert waves == [5, 1] and (stopped.answer, stopped.stop, len(stopped.samples)) == (5, "decided", 6)
    assert full_waves[:2] == [5, 1] and len(full.samples) == 8 and full.answer == stopped.answer


def test_min_lead_and_plain_majority(tiny_tokenizer):
    plan = {"problem 0": [trace(3), trace(3), trace(3), trace(8), trace(8), trace(8), trace(8)]}
    for opts, answer, stop, n in [(SolveOptions(wave=1, chunk_tokens=64, min_lead=3), 3, "lead", 3),
                                  (SolveOptions(wave=1, chunk_tokens=64), 8, "all samples", 7)]:
        gen = Scripted(tiny_tokenizer, plan)
        r = Solver(gen, tiny_tokenizer, settings(samples=7, max_new_tokens=64), opts).solve(problems(1))[0]
        assert (r.answer, r.stop, len(r.samples)) == (answer, stop, n)


def test_stop_at_first_box_and_at_think(tiny_tokenizer):
    text = "<think>\nso \\boxed{11} hmm\n" + "Wait, let me verify.\n" * 6 + "no, \\boxed{12}\n</think> \\boxed{13}"
    plan = {"problem 0": [text]}
    for first_box, think, answer, end in [(True, True, 11, "first box"), (False, True, 12, "think"),
                                          (False, False, 13, "finished")]:
        gen = Scripted(tiny_tokenizer, plan)
        s = settings(samples=1, stop_at_think=think)
        r = Solver(gen, tiny_tokenizer, s, SolveOptions(chunk_tokens=4, stop_at_first_box=first_box)).solve(
            problems(1))[0]
        assert (r.answer, r.samples[0].end) == (answer, end)
        if first_box:
            assert r.tokens < len(tiny_tokenizer.encode(text, add_special_tokens=False)) / 2


def test_global_clock_never_overruns_and_shares_saved_time(tiny_tokenizer):
    """20 problems: even ones easy (all agree, one short chunk), odd ones hard (every sample differs, long).
    Calls take 0.05 s + 4 ms a decode step: an easy problem needs about 0.1 s, a hard one 3 chunks, 0.43 s, to its
    samples' answers. An equal split answers the easy ones only; the global clock gives the hard ones the time the
    easy ones saved and answers them too, which leaves the last problems less (the first 16 are all answered)."""
    plan = {}
    for i in range(20):
        plan[f"problem {i}."] = [trace(i)] * 8 if i % 2 == 0 else [trace(100 + j, 8) for j in range(8)]
    budget, used, answered = 5.0, {}, {}
    for opts in (SolveOptions(time_limit_s=budget, chunk_tokens=32),
                 SolveOptions(per_problem_s=budget / 20, chunk_tokens=32)):
        clock = FakeClock()
        gen = Scripted(tiny_tokenizer, plan, clock=clock, call_s=0.05, step_s=0.004)
        solver = Solver(gen, tiny_tokenizer, settings(samples=8, max_new_tokens=160), opts, clock=clock,
                        started_at=clock.now)
        results = solver.solve(problems(20))
        assert clock.now - 1000.0 <= budget, opts  # never past the budget
        assert len(results) == 20
        glob = opts.per_problem_s is None
        easy = results[0:16:2] if glob else results[0::2]
        assert [r.answer for r in easy] == [int(r.id[1:]) for r in easy]  # the easy ones answered
        if glob:  # and hard ones too, with the time the easy ones saved (each sample's answer differs: plurality)
            assert sum(r.answer is not None for r in results[1:16:2]) >= 6
        used[glob], answered[glob] = clock.now - 1000.0, sum(r.answer is not None for r in results)
        if not glob:
            assert all(r.seconds <= opts.per_problem_s for r in results)
        else:  # time the easy ones saved went to later problems: hard ones get far more than an equal split
            assert max(r.seconds for r in results[1::2]) > 1.5 * budget / 20
            assert {r.planned for r in results[1:]} == {6, 8}  # a third fewer after a problem ran out of time
    assert used[True] > used[False] and answered[True] > answered[False]
    # a budget too small for more than the warm-up and a probe: nothing overruns, problems are skipped
    clock = FakeClock()
    gen = Scripted(tiny_tokenizer, plan, clock=clock, call_s=0.05, step_s=0.004)
    solver = Solver(gen, tiny_tokenizer, settings(samples=8, max_new_tokens=160),
                    SolveOptions(time_limit_s=0.3, chunk_tokens=16), clock=clock, started_at=clock.now)
    results = solver.solve(problems(20))
    assert clock.now - 1000.0 <= 0.3
    skipped = [r for r in results if r.stop == "no time"]
    assert skipped and all(r.samples == [] and r.answer is None and r.calls == 0 for r in skipped)


class Spiky(Scripted):
    """Every third call takes 2.5 times as long: a shared machine's slow moments."""

    def generate(self, prompts, settings, on_progress=None):
        before = self.clock.now
        out = super().generate(prompts, settings, on_progress)
        if len(self.calls) % 3 == 0:
            self.clock.now += 1.5 * (self.clock.now - before)
        return out


def test_slow_calls_borrow_from_later_shares_but_never_pass_the_budget(tiny_tokenizer):
    """Planned by expected times alone, these budgets are overrun (by 0.02-0.09 s); the bound keeps them."""
    plan = {f"problem {i}.": [trace(i, j) for j in range(8)] for i in range(12)}
    for budget in (1.75, 3.25, 4.75, 6.0):
        clock = FakeClock()
        gen = Spiky(tiny_tokenizer, plan, clock=clock, call_s=0.05, step_s=0.004)
        solver = Solver(gen, tiny_tokenizer, settings(samples=8, max_new_tokens=160),
                        SolveOptions(time_limit_s=budget, chunk_tokens=16), clock=clock, started_at=clock.now)
        results = solver.solve(problems(12))
        assert clock.now - 1000.0 <= budget and len(results) == 12
        assert sum(r.answer is not None for r in results) >= 3


def test_one_call_per_wave_unless_something_acts_mid_wave(tiny_tokenizer):
    plan = {"problem 0": [trace(5, j) for j in range(8)]}
    for opts, chunk in [(SolveOptions(), 200), (SolveOptions(stop_at_first_box=True), 25),
                        (SolveOptions(wave=8), 25), (SolveOptions(per_problem_s=60.0), 25),
                        (SolveOptions(chunk_tokens=7), 7)]:
        gen = Scripted(tiny_tokenizer, plan, clock=FakeClock())
        Solver(gen, tiny_tokenizer, settings(samples=8), opts, clock=gen.clock).solve(problems(1))
        assert max(c[2] for c in gen.calls) == chunk, opts  # the warm-up asks for 1 token


def test_samples_planned_fewer_when_behind(tiny_tokenizer, monkeypatch):
    """Never-decided problems (81 tokens each), a budget that waves of all 8 samples cannot keep up with.
    Parallel samples that cost the same (a GPU): a third fewer, the AIMO-2 cut. Samples that each add to a call's
    time (a CPU, 3 ms a sample-step): what the share buys -- 1 sample, 0.62 s -- which answers problems where the
    AIMO-2 cut (6 samples, 1.9 s a wave against shares of ~0.25 s) answers none in the same budget."""
    plan = {f"problem {i}.": [trace(100 + j, 8) for j in range(8)] for i in range(12)}

    def run(sample_step_s):
        clock = FakeClock()
        gen = Scripted(tiny_tokenizer, plan, clock=clock, call_s=0.05, step_s=0.004, sample_step_s=sample_step_s)
        solver = Solver(gen, tiny_tokenizer, settings(samples=8, max_new_tokens=160), SolveOptions(
            time_limit_s=3.0, chunk_tokens=160), clock=clock, started_at=clock.now)
        results = solver.solve(problems(12))
        assert clock.now - 1000.0 <= 3.0
        return [r.planned for r in results if r.samples], sum(r.answer is not None for r in results)

    planned, answered = run(0.0)
    assert set(planned) == {6} and answered >= 6
    planned, answered = run(0.003)
    assert set(planned) == {1} and answered >= 3, planned

    def aimo_cut(n, share, costs, last_cut=False):  # the rule before costs were priced per wave size
        return n if not last_cut and (costs[-1] is None or costs[-1] <= share) else math.ceil(2 * n / 3)

    monkeypatch.setattr(solver_module, "planned_samples", aimo_cut)
    assert run(0.003)[1] == 0


def test_waves_of_k_are_priced_and_run_at_k(tiny_tokenizer):
    """--wave 2 under a time limit: the warm-up and the pricing calls run at the wave's batch (2), not at --samples
    (8), so every call the solver makes is one the plan priced; problems are answered within the budget."""
    plan = {f"problem {i}.": [trace(100 + j, 8) for j in range(8)] for i in range(12)}
    clock = FakeClock()
    gen = Scripted(tiny_tokenizer, plan, clock=clock, call_s=0.05, step_s=0.004, sample_step_s=0.003)
    solver = Solver(gen, tiny_tokenizer, settings(samples=8, max_new_tokens=160),
                    SolveOptions(time_limit_s=4.0, wave=2), clock=clock, started_at=clock.now)
    results = solver.solve(problems(12))
    assert clock.now - 1000.0 <= 4.0
    assert max(c[1] for c in gen.calls) <= 2  # no call drew more than a wave of 2, the probes included
    assert sum(r.answer is not None for r in results) >= 1


@pytest.mark.parametrize("prefill", [0.0, 0.05])
def test_a_problem_behind_plans_the_samples_that_cost_least(tiny_tokenizer, prefill):
    """Calls cost (0.4 + prefill x samples) + (4 ms + 2 ms a sample) a step: a CPU where the call's overhead
    dominates. The pricing call of one sample runs 8 steps; read as all steps, a 40-step wave of 1 is priced at 5
    times that call (2.24 s, true 0.64 s) and 3 samples look within 10 % of one: a problem behind planned 3. Once a
    wave of 8 was measured at two lengths (16, 16, 8 steps), the one-sample wave is priced with its overhead, and a
    problem behind plans 1."""
    class Gen(Scripted):
        def generate(self, prompts, settings, on_progress=None):
            out = super().generate(prompts, settings, on_progress)
            self.clock.now += prefill * sum(len(r) for r in out)
            return out

    plan = {f"problem {i}.": [trace(i, 4)] * 8 for i in range(3)}
    clock = FakeClock()
    gen = Gen(tiny_tokenizer, plan, clock=clock, call_s=0.4, step_s=0.004, sample_step_s=0.002)
    solver = Solver(gen, tiny_tokenizer, settings(samples=8, max_new_tokens=40),
                    SolveOptions(time_limit_s=100.0, chunk_tokens=16), clock=clock, started_at=clock.now)
    solver.solve(problems(1))  # 8 samples in one wave, on time
    assert solver.times.step_counts(1) == {8} and len(solver.times.step_counts(8)) > 1
    solver.chunk, solver.opts = 40, SolveOptions(time_limit_s=100.0, chunk_tokens=40)  # a wave: one 40-step call
    _, _, planned = solver.deadline(500)  # a share of ~0.2 s: behind, no wave fits
    assert planned == 1


@pytest.mark.parametrize("overhead_per_sample", [0.0, 0.05])
def test_a_batch_measured_at_one_length_borrows_its_neighbours_overhead(overhead_per_sample):
    """A batch measured at one call length only (a pricing call: 1 sample, 8 steps) and one measured at several
    (8 samples: 16, 16 and 8 steps), calls costing (0.4 + c*m) + (4 + 2m) ms a step, c the overhead a sample adds
    (a CPU's prefill: 0 or 50 ms). Read as all steps, one sample's 40-step wave is priced at 5 times its probe
    (2.24-2.49 s, true: 0.64-0.69 s). The neighbour's overhead in seconds (0.4-0.8 s) is right without a prefill;
    with one it exceeds the whole probe (0.5 s), which would make a step free: then its share of a call is taken.
    Either way the price lies between the probe and the eight-sample wave, far below the probe read as all steps,
    and exact without a prefill."""
    def t(m, k):
        return 0.4 + overhead_per_sample * m + (0.004 + 0.002 * m) * k

    times = CallTimes()
    times.record(1, 8, t(1, 8))
    for k in (16, 16, 8):
        times.record(8, k, t(8, k))
    probe, one, eight = times.seconds(1, 8), times.seconds(1, 40), times.seconds(8, 40)
    assert probe == pytest.approx(t(1, 8)) and eight == pytest.approx(t(8, 40))
    assert probe < one < eight and one < 40 / 8 * t(1, 8) / 2
    if not overhead_per_sample:
        assert one == pytest.approx(t(1, 40))


def test_a_pricing_call_cut_before_its_first_token_prices_nothing(tiny_tokenizer):
    """transformers' max_time can end a call before its first token: recorded as one step, its whole time would
    price every step of a wave (a 100-step wave at 100x the call)."""
    class Empty:
        def generate(self, prompts, settings, on_progress=None):
            return [[Completion("", [], False) for _ in range(settings.samples)] for _ in prompts]

    solver = Solver(Empty(), tiny_tokenizer, settings(samples=4), SolveOptions(time_limit_s=60.0), clock=FakeClock(),
                    started_at=1000.0)
    solver.price_waves([1, 2, 3])
    assert not solver.times.measured(1) and not solver.times.measured(4)


def test_time_cut_votes_with_boxes_already_written(tiny_tokenizer):
    plan = {"problem 0": ["<think>\n\\boxed{9}\n" + "Wait, let me verify.\n" * 30 + "</think>"] * 3}
    clock = FakeClock()
    gen = Scripted(tiny_tokenizer, plan, clock=clock, call_s=0.01, step_s=0.01)
    solver = Solver(gen, tiny_tokenizer, settings(samples=3), SolveOptions(per_problem_s=1.0, chunk_tokens=16),
                    clock=clock)
    r = solver.solve(problems(1))[0]
    assert r.stop == "time" and r.answer == 9 and {s.end for s in r.samples} == {"time"}
    assert r.seconds <= 1.0


# ------------------------------------------------------------------------------------------ input


def test_read_problems_formats_and_errors(tmp_path):
    (tmp_path / "p.csv").write_text("id,problem,answer\n1,What is 2+2?,4\n2,\"Compute 1, 2\",\n")
    rows = read_problems(str(tmp_path / "p.csv"))
    assert rows == [{"id": "1", "problem": "What is 2+2?", "answer": "4"}, {"id": "2", "problem": "Compute 1, 2"}]
    (tmp_path / "p.jsonl").write_text('{"id": 7, "problem": "x", "answer": 3}\n')
    assert read_problems(str(tmp_path / "p.jsonl")) == [{"id": "7", "problem": "x", "answer": "3"}]
    assert read_problems("-", stdin=['{"id": "a", "problem": "y"}\n', "\n"]) == [{"id": "a", "problem": "y"}]
    bad = {
        "nocol.jsonl": ('{"problem": "x"}\n', "missing column 'id'"),
        "dup.jsonl": ('{"id": 1, "problem": "x"}\n{"id": 1, "problem": "y"}\n', "row 2: id '1' repeats row 1"),
        "empty.jsonl": ('{"id": 1, "problem": " "}\n', "row 1: column 'problem' is empty"),
    }
    for name, (text, msg) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(solve_cli.MathRecipeError, match=msg):
            read_problems(str(tmp_path / name))
    with pytest.raises(solve_cli.MathRecipeError, match=r"stdin\), line 2: not valid JSON"):
        read_problems("-", stdin=['{"id": 1, "problem": "y"}\n', "{oops\n"])


# ------------------------------------------------------------------------------------------ the command


@pytest.fixture()
def toy_problems(tmp_path, toy_splits):
    f = tmp_path / "toy.jsonl"
    f.write_text("".join(json.dumps({"id": f"t{i}", **r}) + "\n" for i, r in enumerate(toy_splits.test[:4])))
    return f


def test_python_m_solve_is_the_one_main_with_its_error_handling(tiny_model_dir, toy_problems, tmp_path,
                                                                monkeypatch, capsys):
    """Issue 19.3: ``python -m mathrecipe.solve`` calls the one ``mathrecipe`` main, so solve gets the CLI's whole
    error handling: a full disk is one line naming the file (solve's second main printed only MathRecipeErrors, so
    it was a traceback), and -q may follow the command."""
    import errno
    import os
    import runpy
    import sys

    import mathrecipe.files as files_mod

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files_mod.os, "fsync", full)
    out = tmp_path / "o"
    monkeypatch.setattr(sys, "argv", ["solve", "-q", "--model", str(tiny_model_dir), "--problems", str(toy_problems),
                                      "--samples", "1", "--max-new-tokens", "8", "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        runpy.run_module("mathrecipe.solve", run_name="__main__")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mathrecipe: error: {out}") and "no space left on device" in err[0], err


def test_solve_command_on_a_tiny_model(tiny_model_dir, toy_problems, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["-q", "--model", str(tiny_model_dir), "--problems", str(toy_problems), "--samples", "3",
               "--max-new-tokens", "24", "--per-problem", "20s", "--out", str(out), "--generate-batch-size", "8"])
    assert rc == 0
    lines = (out / "answers.csv").read_text().splitlines()
    assert lines[0] == "id,answer" and [x.split(",")[0] for x in lines[1:]] == ["t0", "t1", "t2", "t3"]
    rows = [json.loads(x) for x in (out / "solve.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["t0", "t1", "t2", "t3"]
    for r in rows:
        assert r["seconds"] <= 20 and r["stop"] in ("decided", "all samples", "time")
        assert {"votes", "invalid", "samples", "tokens", "gold", "correct"} <= set(r)
        assert 0 < r["tokens"] <= 3 * 24
    printed = capsys.readouterr().out
    assert "solved 4 problems" in printed and "accuracy" in printed


def test_top_level_cli_has_solve(tiny_model_dir, toy_problems, tmp_path):
    from mathrecipe.cli import main as mathrecipe_main

    out = tmp_path / "top"
    assert mathrecipe_main(["-q", "solve", "--model", str(tiny_model_dir), "--problems", str(toy_problems),
                            "--samples", "2", "--max-new-tokens", "8", "--limit", "1", "--out", str(out)]) == 0
    assert (out / "answers.csv").read_text().splitlines()[1].startswith("t0,")


def test_solve_command_reads_stdin(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO('{"id": "s1", "problem": "Compute 12 + 30."}\n'))
    out = tmp_path / "o"
    assert main(["-q", "--model", str(tiny_model_dir), "--problems", "-", "--samples", "2", "--max-new-tokens",
                 "8", "--out", str(out)]) == 0
    assert (out / "answers.csv").read_text().splitlines()[1].startswith("s1,")
    assert "accuracy" not in capsys.readouterr().out  # no answer column, no accuracy line


@pytest.mark.parametrize("args,message", [
    (["--time-limit", "5x"], "--time-limit '5x': expected a duration"),
    (["--time-limit", "1h", "--per-problem", "6m"], "--time-limit and --per-problem are exclusive"),
    (["--time-budget", "1h"], "--time-budget is now --time-limit"),  # old spellings: "budget" is tokens now
    (["--batch-size", "8"], "--batch-size is now --generate-batch-size"),
    (["--answer-format", "float"], "--answer-format must be one of int0-999, any"),
    (["--samples", "0"], "--samples must be >= 1"),
    (["--min-lead", "0"], "--min-lead must be an integer >= 1"),
    (["--wave", "-1"], "--wave must be 'auto' or an integer >= 1"),
    (["--wave", "all"], "--wave must be 'auto' or an integer >= 1, got 'all'"),
    (["--share", "fair"], "--share must be one of adaptive, equal, got 'fair'"),
    (["--backend", "tgi"], "--backend must be one of hf, vllm"),
    (["--limit", "0"], "--limit must be >= 1"),
])
def test_bad_arguments_fail_in_one_line_before_loading(tiny_model_dir, toy_problems, tmp_path, monkeypatch,
                                                       capsys, args, message):
    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr("mathrecipe.evaluate.generation.make_generator", no_loading)
    rc = main(["--model", str(tiny_model_dir), "--problems", str(toy_problems), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("mathrecipe: error: ") and message in err[0], err


def test_bad_inputs_fail_in_one_line(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "p.jsonl").write_text('{"problem": "x"}\n')
    cases = [
        (["--model", str(tmp_path / "nope"), "--problems", str(tmp_path / "p.jsonl")], "nope"),
        (["--model", str(tiny_model_dir), "--problems", str(tmp_path / "p.jsonl")], "missing column 'id'"),
        (["--model", str(tiny_model_dir), "--problems", str(tmp_path / "none.csv")], "none.csv: no such file"),
    ]
    (tmp_path / "afile").write_text("")
    (tmp_path / "ok.jsonl").write_text('{"id": 1, "problem": "x"}\n')
    cases.append((["--model", str(tiny_model_dir), "--problems", str(tmp_path / "ok.jsonl"), "--out",
                   str(tmp_path / "afile")], "afile: is a file; give a folder"))
    for argv, msg in cases:
        assert main([*argv, "--out", str(tmp_path / "o")] if "--out" not in argv else argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


def test_outputs_are_written_atomically(monkeypatch, tmp_path, tiny_tokenizer):
    """Both files go through mathrecipe.files.atomic_write_text."""
    written = []
    import mathrecipe.files as files

    real = files.atomic_write_text
    monkeypatch.setattr(files, "atomic_write_text", lambda p, t: written.append(p.name) or real(p, t))
    gen = Scripted(tiny_tokenizer, {"problem 0": [trace(4)]})
    results = Solver(gen, tiny_tokenizer, settings(samples=1), SolveOptions()).solve(problems(1))
    solve_cli.write_outputs(tmp_path, [r.row() for r in results])
    assert written == ["solve.jsonl", "answers.csv"]  # the file a rerun resumes from first
    assert (tmp_path / "answers.csv").read_text() == "id,answer\np0,4\n"
    assert math.isclose(json.loads((tmp_path / "solve.jsonl").read_text())["tokens"], results[0].tokens)


def test_vllm_backend_draws_each_wave_as_one_prompt_with_n_samples(tiny_model_dir, tiny_tokenizer, tmp_path,
                                                                    monkeypatch):
    """vLLM seeds a request's n samples apart; the same prompt sent n times with one seed would repeat itself."""
    import sys
    import types

    calls = []

    class SamplingParams:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    class LLM:
        def __init__(self, **kw):
            pass

        def generate(self, prompts, params, use_tqdm=True):
            calls.append((len(prompts), params.n, params.max_tokens))
            ids = tiny_tokenizer.encode("<think>\n\\boxed{7}\n</think>", add_special_tokens=False)
            out = types.SimpleNamespace(text=tiny_tokenizer.decode(ids), token_ids=ids, finish_reason="stop")
            return [types.SimpleNamespace(outputs=[out] * params.n) for _ in prompts]

    vllm, inputs = types.ModuleType("vllm"), types.ModuleType("vllm.inputs")
    vllm.LLM, vllm.SamplingParams, inputs.TokensPrompt, vllm.inputs = LLM, SamplingParams, dict, inputs
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    problems_file = tmp_path / "p.jsonl"
    problems_file.write_text('{"id": "a", "problem": "Compute 3 + 4.", "answer": "7"}\n')
    out = tmp_path / "o"
    assert main(["-q", "--model", str(tiny_model_dir), "--problems", str(problems_file), "--backend", "vllm",
                 "--samples", "6", "--wave", "2", "--max-new-tokens", "40", "--chunk-tokens", "40",
                 "--out", str(out)]) == 0
    assert calls == [(1, 2, 40), (1, 2, 40)]  # two waves of 2, then 4 > 0 + 2: decided
    row = json.loads((out / "solve.jsonl").read_text())
    assert (row["answer"], row["stop"], row["samples"], row["correct"]) == (7, "decided", 4, True)


def test_a_slow_machine_answers_some_problems_fully_instead_of_cutting_every_sample(tiny_tokenizer):
    """Issue 17.5: calls cost 0.4 s + 10 ms a step (a loaded machine: the overhead dominates), a wave needs ~50
    steps (3 chunks, ~1.7 s) to reach its answer, and the budget gives each of 30 problems 0.5 s. Cutting every
    problem at its share answers none (each sample stops after a probe, before it writes an answer); waves planned
    to complete answer problems fully -- the first ones -- and skip the rest, never past the budget."""
    plan = {f"problem {i}.": [trace(i, 6)] * 8 for i in range(30)}
    clock = FakeClock()
    gen = Scripted(tiny_tokenizer, plan, clock=clock, call_s=0.4, step_s=0.01)
    solver = Solver(gen, tiny_tokenizer, settings(samples=8, max_new_tokens=160),
                    SolveOptions(time_limit_s=15.0), clock=clock, started_at=clock.now)
    results = solver.solve(problems(30))
    assert clock.now - 1000.0 <= 15.0
    answered = [r for r in results if r.answer is not None]
    assert len(answered) >= 6, [(r.stop, r.answer) for r in results]
    assert all(r.answer == i for i, r in enumerate(results) if r.answer is not None)
    assert [r.answer is not None for r in results[: len(answered)]] == [True] * len(answered)  # the first ones
    assert all(r.stop in ("decided", "all samples") for r in answered)  # whole waves: every sample voted
    # the equal split (the bench's baseline: same planning, the share fixed) cuts every problem at 0.5 s
    clock = FakeClock()
    gen = Scripted(tiny_tokenizer, plan, clock=clock, call_s=0.4, step_s=0.01)
    equal = Solver(gen, tiny_tokenizer, settings(samples=8, max_new_tokens=160),
                   SolveOptions(time_limit_s=15.0, share="equal"), clock=clock, started_at=clock.now)
    results = equal.solve(problems(30))
    assert clock.now - 1000.0 <= 15.0 and sum(r.answer is not None for r in results) < len(answered)
    assert all(r.seconds <= 0.5 + 1e-9 for r in results)


# ------------------------------------------------------------------------------------------ the process's clock


def test_process_age_from_proc():
    from mathrecipe.solve.clock import linux_process_age

    # the command name may hold spaces and parentheses; starttime is field 22 (ticks after boot)
    stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 " + " ".join(["0"] * 12) + " 5000 3133440 361 18446"
    assert linux_process_age(stat, "70.25 130.00\n", 100) == pytest.approx(20.25)


def test_process_started_at_counts_what_ran_before_the_import(tmp_path):
    import subprocess
    import sys

    code = ("import time; time.sleep(1.5); from mathrecipe.solve.clock import process_started_at; "
            "print(time.monotonic() - process_started_at())")
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert age >= 1.5


SRC = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "src")


def _solve_command(*args):
    import os
    import sys

    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return [sys.executable, "-m", "mathrecipe.cli", "-q", "solve", *args], env


def _many_problems(path, n):
    path.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"Compute {i} + {2 * i} - 7."}) + "\n"
                            for i in range(n)))
    return path


@pytest.mark.slow
def test_the_process_never_outlives_its_budget(tiny_model_dir, tmp_path):
    """Issue 17.5: measured from outside, the whole `mathrecipe solve` process -- interpreter start, imports, model
    loading, solving, writing, exit -- ends within --time-limit, with work left that could fill it. The budget is
    sized from this machine's own time to start, load and solve one problem (a loaded machine starts slowly)."""
    import subprocess
    import time

    problems_file = _many_problems(tmp_path / "p.jsonl", 2000)
    cmd, env = _solve_command("--model", str(tiny_model_dir), "--problems", str(problems_file), "--samples", "4",
                              "--max-new-tokens", "96", "--limit", "1", "--out", str(tmp_path / "probe"))
    t = time.monotonic()
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # start-up, loading and one problem, here and now
    budget = max(12.0, 2 * (time.monotonic() - t))
    out = tmp_path / "out"
    cmd, env = _solve_command("--model", str(tiny_model_dir), "--problems", str(problems_file), "--samples", "4",
                              "--max-new-tokens", "96", "--time-limit", f"{budget:.1f}s", "--out", str(out))
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "solve.jsonl").read_text().splitlines()]
    assert wall <= budget, (wall, budget)
    assert any(r["samples"] for r in rows) and rows[-1]["stop"] == "no time"  # it worked, and work was left


def test_the_watchdog_fires_at_its_time_writes_then_exits():
    """Issue 17.5: at ``at`` the watchdog runs ``on_fire`` (never before), then exits with status 0."""
    import threading
    import time

    from mathrecipe.solve.clock import Watchdog

    fired, exited = [], threading.Event()
    at = time.monotonic() + 0.2
    w = Watchdog(at, lambda: fired.append(time.monotonic()), exit=lambda code: exited.set()).start()
    assert exited.wait(30) and w.fired
    assert fired and fired[0] >= at


def test_a_cancelled_watchdog_never_fires():
    import time

    from mathrecipe.solve.clock import Watchdog

    calls = []
    w = Watchdog(time.monotonic() + 0.3, lambda: calls.append("fire"), exit=lambda code: calls.append(code)).start()
    w.cancel()
    time.sleep(0.5)
    assert calls == [] and not w.fired


def test_the_watchdog_waits_briefly_for_the_owners_lock_then_exits_anyway():
    """The owner holds the lock (a write in progress): the watchdog waits at most ``lock_wait``, then ends the
    process even if the owner never lets go (each of the owner's writes is atomic, so no file is left torn)."""
    import threading
    import time

    from mathrecipe.solve.clock import Watchdog

    exited = threading.Event()
    w = Watchdog(time.monotonic(), lambda: None, exit=lambda code: exited.set(), lock_wait=0.05)
    with w.lock:
        w.start()
        assert exited.wait(30)  # while the lock is still held here


@pytest.mark.slow
def test_a_step_the_solver_cannot_bound_still_ends_before_the_time_limit(tiny_model_dir, tmp_path):
    """Issue 17.5: a step with no bound the solver can set (loading, a probe, a grader call) hangs. Measured from
    outside, the command still ends before --time-limit, exit 0, with both files naming every problem."""
    import subprocess
    import sys
    import time

    problems_file = _many_problems(tmp_path / "p.jsonl", 5)
    out = tmp_path / "out"
    _, env = _solve_command()
    code = ("import sys, time; import mathrecipe.cli as cli; from mathrecipe.solve.solver import Solver; "
            "Solver.calibrate_cpu_threads = lambda self, prompt: time.sleep(300); "  # the hang
            "sys.argv[0] = cli.__file__; sys.exit(cli.main(sys.argv[1:]))")  # as the command itself
    limit = 25.0  # start-up took 4 s here, 6-13 s on a loaded machine
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, "-q", "solve", "--model", str(tiny_model_dir), "--problems",
                           str(problems_file), "--samples", "2", "--max-new-tokens", "16", "--time-limit",
                           f"{limit}s", "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert wall < limit, wall
    assert "--time-limit reached" in proc.stderr
    rows = _rows(out / "solve.jsonl")
    assert sorted(r["id"] for r in rows) == [f"q{i}" for i in range(5)] and {r["stop"] for r in rows} == {"no time"}
    assert len((out / "answers.csv").read_text().splitlines()) == 6


# ------------------------------------------------------------------------------------------ resume


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_kill_9_then_rerun_keeps_every_answer(tiny_model_dir, tmp_path):
    """Issue 22.1: a `mathrecipe solve` killed with SIGKILL once answers.csv holds answers, rerun: every problem
    answered before the kill is kept as it was (not solved again), the rest are solved, both files hold all."""
    import signal
    import subprocess
    import time

    problems_file = _many_problems(tmp_path / "p.jsonl", 400)
    out = tmp_path / "out"
    common = ["--model", str(tiny_model_dir), "--problems", str(problems_file), "--samples", "2",
              "--max-new-tokens", "16", "--time-limit", "1h", "--out", str(out)]
    cmd, env = _solve_command(*common)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while len((out / "answers.csv").read_text().splitlines()) - 1 < 3 if (out / "answers.csv").exists() else True:
            assert proc.poll() is None, "solve ended before it could be killed"
            assert time.monotonic() < deadline, "solve made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = _rows(out / "solve.jsonl")
    answers_before = (out / "answers.csv").read_text().splitlines()
    assert 3 <= len(before) < 400 and len(answers_before) == len(before) + 1
    limit = len(before) + 3
    assert main(["-q", *common, "--limit", str(limit)]) == 0  # the same command again (over a few more problems)
    after = _rows(out / "solve.jsonl")
    assert [r["id"] for r in after] == [f"q{i}" for i in range(limit)]
    assert after[: len(before)] == before  # kept exactly: not solved again
    assert (out / "answers.csv").read_text().splitlines()[: len(answers_before)] == answers_before
    assert len((out / "answers.csv").read_text().splitlines()) == limit + 1
    # the budget's clock carries over: the kept answers' time counts as spent
    assert min(r["clock_s"] for r in after[len(before):]) >= max(r["clock_s"] for r in before)


def test_a_rerun_with_another_model_settings_or_problems_is_refused(tiny_model_dir, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    problems_file = _many_problems(tmp_path / "p.jsonl", 3)
    out = tmp_path / "out"
    base = ["-q", "--model", str(model), "--problems", str(problems_file), "--samples", "2", "--max-new-tokens",
            "8", "--out", str(out)]
    assert main([*base, "--limit", "2"]) == 0
    first = _rows(out / "solve.jsonl")
    capsys.readouterr()

    def refused(argv, what):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds answers made with other settings" in err[0] and what in err[0], err

    refused([*base, "--temperature", "0.3"], "temperature")
    refused([*base, "--answer-format", "any"], "answer_format")
    refused([*base, "--system-prompt", ""], "system_prompt")
    other = _many_problems(tmp_path / "other.jsonl", 4)
    refused([*base[:4], str(other), *base[5:]], "problem file")
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data)  # the same path, rewritten: another model may have been copied there
    import os

    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    refused(base, "model files")
    assert _rows(out / "solve.jsonl") == first  # refusals touch nothing


def test_a_rerun_keeps_answers_and_regrades_with_gold_added(tiny_model_dir, tmp_path):
    """Gold answers are not part of the binding: adding them grades the kept answers."""
    problems_file = tmp_path / "p.jsonl"
    problems_file.write_text('{"id": "a", "problem": "Compute 1 + 2."}\n{"id": "b", "problem": "Compute 2 + 2."}\n')
    out = tmp_path / "out"
    base = ["-q", "--model", str(tiny_model_dir), "--problems", str(problems_file), "--samples", "2",
            "--max-new-tokens", "8", "--out", str(out)]
    assert main(base) == 0
    first = _rows(out / "solve.jsonl")
    problems_file.write_text('{"id": "a", "problem": "Compute 1 + 2.", "answer": "3"}\n'
                             '{"id": "b", "problem": "Compute 2 + 2.", "answer": "4"}\n')
    assert main(base) == 0
    again = _rows(out / "solve.jsonl")
    assert [{k: v for k, v in r.items() if k not in ("gold", "correct")} for r in again] == first
    assert [(r["gold"], r["correct"]) for r in again] == [("3", first[0]["answer"] == 3), ("4", first[1]["answer"] == 4)]


def test_bind_refuses_rows_without_a_binding(tmp_path):
    from mathrecipe.solve.resume import bind

    (tmp_path / "solve.jsonl").write_text('{"id": "a", "answer": 1, "stop": "decided"}\n')
    with pytest.raises(solve_cli.MathRecipeError, match="without solve_config.json"):
        bind(tmp_path, {"format": 1}, "solve.jsonl")


# ------------------------------------------------------------------------------------------ prompt length


def test_an_overlong_problem_is_skipped_with_its_row_saying_why(tiny_model_dir, tmp_path, caplog):
    """Issue 22.3: the tiny model has 1,024 positions; a problem of ~5,000 tokens is skipped (not generated), its
    row says why, the others are solved and the run succeeds."""
    problems_file = tmp_path / "p.jsonl"
    long = "Compute 1 + 2. " * 500  # ~4,000 tokens
    problems_file.write_text("".join(json.dumps({"id": i, "problem": p}) + "\n"
                                     for i, p in [("a", "Compute 1 + 2."), ("big", long), ("c", "Compute 3 + 4.")]))
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        assert main(["-q", "--model", str(tiny_model_dir), "--problems", str(problems_file), "--samples", "2",
                     "--max-new-tokens", "8", "--out", str(out)]) == 0
    rows = {r["id"]: r for r in _rows(out / "solve.jsonl")}
    assert rows["big"]["stop"] == "prompt too long" and rows["big"]["samples"] == 0
    assert rows["big"]["context"] == 1024 and rows["big"]["prompt_tokens"] > 1024
    assert rows["a"]["samples"] == 2 and rows["c"]["samples"] == 2
    assert (out / "answers.csv").read_text().splitlines()[2] == "big,"
    warned = [r.getMessage() for r in caplog.records if "context" in r.getMessage()]
    assert len(warned) == 1 and "row 2 (id 'big')" in warned[0] and "\n" not in warned[0]


def test_a_huge_problem_is_measured_on_a_prefix(tiny_tokenizer):
    """A 5 MB problem is not tokenised whole (38 s and 1.8 GB with the toy tokenizer): a prefix of 8 characters per
    position already holds more tokens than the context."""
    seen = []

    class Counting:
        def __init__(self, tok):
            self.tok = tok

        def __getattr__(self, name):
            return getattr(self.tok, name)

        def __call__(self, texts, **kw):
            seen.extend(len(t) for t in texts)
            return self.tok(texts, **kw)

    huge = "Compute 27 + 30 - 47. " * 240_000  # 5.3 MB: 3,360,000 tokens (counted once, whole)
    (ids, n), (ids2, n2) = prompt_tokens(Counting(tiny_tokenizer), [huge, "Compute 1 + 2."], None, 1024)
    assert ids is None and 3.0e6 < n < 3.7e6 and max(seen) < 9 * 1024  # an estimate, from a prefix + template
    assert ids2 is not None and n2 == len(ids2) < 100


@pytest.mark.slow
def test_a_5mb_problem_is_skipped_within_memory(tiny_model_dir, tmp_path):
    """End to end: a 5 MB problem beside a normal one; the command ends with the big one skipped, its peak memory
    under 2 GB (before: generation ran until killed at 12 GB)."""
    import subprocess

    problems_file = tmp_path / "p.jsonl"
    problems_file.write_text(json.dumps({"id": "big", "problem": "Compute 27 + 30 - 47. " * 240_000}) + "\n"
                             + json.dumps({"id": "ok", "problem": "Compute 1 + 2."}) + "\n")
    out = tmp_path / "out"
    cmd, env = _solve_command("--model", str(tiny_model_dir), "--problems", str(problems_file), "--samples", "2",
                              "--max-new-tokens", "8", "--out", str(out))
    # The command runs as the child of a small wrapper: Linux carries the peak RSS of the process that spawned a
    # child (vfork + exec) into the child's ru_maxrss, so measured straight from pytest it counts pytest's memory.
    wrapper = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True,"
               " timeout=300); sys.stderr.write(done.stderr); print(done.returncode, "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([cmd[0], "-c", wrapper, *cmd], env=env, capture_output=True, text=True, timeout=330)
    rc, peak_kib = map(int, done.stdout.split())
    assert rc == 0, done.stderr[-2000:]
    assert peak_kib * 1024 < 2 * 2**30, peak_kib
    rows = {r["id"]: r for r in _rows(out / "solve.jsonl")}
    assert rows["big"]["stop"] == "prompt too long" and rows["ok"]["samples"] == 2
    assert rows["big"]["prompt_tokens"] > 1024 and rows["big"]["prompt_tokens_estimated"]


# ------------------------------------------------------------------------------------------ one-line errors


@pytest.mark.parametrize("name,data,where", [
    ("p.jsonl", b'{"id": 1, "problem": "x"}\n{"id": 2, "problem": "caf\xe9"}\n', "p.jsonl, line 2"),
    ("p.csv", b"id,problem\n1,x\n2,\"two\nlines\"\n3,caf\xe9\n", "p.csv, line 5"),
])
def test_bytes_that_are_not_utf8_are_one_line(tmp_path, tiny_model_dir, capsys, name, data, where):
    (tmp_path / name).write_bytes(data)
    assert main(["--model", str(tiny_model_dir), "--problems", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and where in err[0] and "not UTF-8 (byte 0xe9" in err[0], err


def test_stdin_bytes_that_are_not_utf8_are_one_line(tmp_path, tiny_model_dir, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"id": 1, "problem": "\xff"}\n')))
    assert main(["--model", str(tiny_model_dir), "--problems", "-", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stdin), line 1: not UTF-8" in err[0], err


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    (tmp_path / "p.csv").write_bytes("\ufeffid,problem\n1,x\n".encode())
    assert read_problems(str(tmp_path / "p.csv")) == [{"id": "1", "problem": "x"}]


@pytest.mark.parametrize("flag", ["--per-problem", "--time-limit"])
def test_a_negative_duration_is_one_line(tmp_path, tiny_model_dir, toy_problems, capsys, flag):
    """Issue 22.7: argparse took "-3m" for an option ("expected one argument")."""
    from mathrecipe.cli import main as mathrecipe_main

    args = ["--model", str(tiny_model_dir), "--problems", str(toy_problems), "--out", str(tmp_path / "o"), flag, "-3m"]
    for run in (lambda: main(args), lambda: mathrecipe_main(["solve", *args])):
        try:
            rc = run()
        except SystemExit as e:  # argparse's own error exits
            rc = e.code
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert err[0] == f"mathrecipe: error: {flag} must be a positive duration (such as 5h, 6m or 90s), got '-3m'"


@pytest.mark.parametrize("slow_on,keeps", [(2, 1), (1, 2)])
def test_cpu_threads_are_kept_only_when_they_make_calls_faster(tiny_tokenizer, monkeypatch, slow_on, keeps):
    """On a loaded CPU, torch's two threads made a toy generate call 3-25x slower than one: the solver times a
    probe both ways and keeps the faster; the kept probe is the time bound's first measurement."""
    import torch

    threads = {"n": 2}
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads["n"])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: threads.__setitem__("n", n))

    class CpuModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.generation_config = __import__("types").SimpleNamespace(max_time=None)

    class ThreadBound(Scripted):
        model = CpuModel()

        def generate(self, prompts, settings, on_progress=None):
            before = self.clock.now
            out = super().generate(prompts, settings, on_progress)
            if threads["n"] == slow_on:
                self.clock.now += 9 * (self.clock.now - before)
            return out

    clock = FakeClock()
    gen = ThreadBound(tiny_tokenizer, {"problem 0": [trace(4, 9)] * 4}, clock=clock, call_s=0.05, step_s=0.01)
    solver = Solver(gen, tiny_tokenizer, settings(samples=4), SolveOptions(time_limit_s=60), clock=clock,
                    started_at=clock.now)
    prompt = __import__("mathrecipe.prompts", fromlist=["batch_prompt_ids"]).batch_prompt_ids(
        tiny_tokenizer, ["Compute problem 0."])[0]
    got = solver.calibrate_cpu_threads(prompt)
    assert got["threads"] == keeps and threads["n"] == keeps and solver.warm
    assert solver.times.seconds(4, 8) == pytest.approx(0.05 + 0.08, rel=1e-6)  # the kept probe: 8 steps, 1x
    assert gen.model.generation_config.max_time is None  # restored after each call


def test_a_borrowing_problem_stops_at_its_first_answer(tiny_tokenizer):
    """When its share is over, a problem's borrowed time buys an answer, not a settled vote. Even problems: three
    short samples and five long ones; odd problems: all long (no answer within 60 steps). The long ones price a wave
    high, so every problem borrows; an even one stops right after its short samples vote, after 2 calls (1.2 s),
    instead of waiting for the long ones (3.6 s). (Where the time goes next: here to the odd problems, which borrow
    what a wave is priced at and are cut without an answer.)"""
    plan = {f"problem {i}.": ([trace(i, 1)] * 3 + [trace(i, 14)] * 5) if i % 2 == 0 else [trace(i, 14)] * 8
            for i in range(12)}
    clock = FakeClock()
    gen = Scripted(tiny_tokenizer, plan, clock=clock, call_s=0.4, step_s=0.01)
    # 12 s for the problems, 1 s for the two calls that price a wave of 1 and of 8 before the first one
    solver = Solver(gen, tiny_tokenizer, settings(samples=8, max_new_tokens=160), SolveOptions(time_limit_s=13.0),
                    clock=clock, started_at=clock.now)
    results = solver.solve(problems(12))
    assert clock.now - 1000.0 <= 13.0
    even = [r for r in results[0::2] if r.answer is not None]
    assert len(even) >= 3 and all(r.answer == int(r.id[1:]) for r in even)
    assert all(r.calls == 2 and r.seconds <= 1.2 + 1e-9 for r in even)
    # problem 0's first scripts went to the pricing calls: it has two short samples, the others three
    assert all(r.tally.votes == (2 if r.id == "p0" else 3) and "finished" not in [s.end for s in r.samples]
               for r in even)


class Jittery(Scripted):
    """Each call takes 0.7-1.5 times its time (seeded): a shared machine's calls scatter around their mean."""

    def __init__(self, *args, seed=0, **kw):
        super().__init__(*args, **kw)
        self.rng = random.Random(seed)

    def generate(self, prompts, settings, on_progress=None):
        before = self.clock.now
        out = super().generate(prompts, settings, on_progress)
        self.clock.now += (self.rng.uniform(0.7, 1.5) - 1.0) * (self.clock.now - before)
        return out


def test_a_wave_slower_than_expected_runs_on_to_its_answer(tiny_tokenizer):
    """Every problem borrows (its share cannot buy a wave of 3 calls), and calls scatter (0.7-1.5x): a wave stopped
    at its expected time is often cut a few steps before its answer, and wastes all it ran (5 seeds: 9 answered,
    4-8 waves cut without an answer, the first of them among the first 4 problems). Run on to the calls' bound, a
    started wave answers (11-13); only a wave started with the last seconds may be cut."""
    plan = {f"problem {i}.": [trace(i, 6)] for i in range(30)}
    for seed in range(5):
        clock = FakeClock()
        gen = Jittery(tiny_tokenizer, plan, clock=clock, call_s=0.1, step_s=0.01, seed=seed)
        solver = Solver(gen, tiny_tokenizer, settings(samples=1, max_new_tokens=160),
                        SolveOptions(time_limit_s=12.0, chunk_tokens=20), clock=clock, started_at=clock.now)
        results = solver.solve(problems(30))
        assert clock.now - 1000.0 <= 12.0
        started = [r for r in results if r.samples]
        assert sum(r.answer is not None for r in results) >= 10, seed
        assert all(r.answer == int(r.id[1:]) for r in started[:10]), (seed, [(r.stop, r.answer) for r in started])


def test_a_problem_cut_before_a_useful_vote_is_priced_above_what_it_got(tiny_tokenizer):
    """Cut before any sample voted, a problem needed more steps than it ran: it counts as twice as many (at most
    max_new_tokens), so the price of a wave grows instead of being set by the problems that happened to vote early."""
    plan = {"problem 0": [trace(7, 14)] * 4}
    clock = FakeClock()
    gen = Scripted(tiny_tokenizer, plan, clock=clock, call_s=0.05, step_s=0.01)
    solver = Solver(gen, tiny_tokenizer, settings(samples=4, max_new_tokens=160),
                    SolveOptions(per_problem_s=0.5, chunk_tokens=16), clock=clock)
    r = solver.solve(problems(1))[0]
    ran = max(len(s.ids) for s in r.samples)
    assert r.stop == "time" and r.answer is None and 0 < ran < 60
    assert list(solver.steps_needed) == [2 * ran]
