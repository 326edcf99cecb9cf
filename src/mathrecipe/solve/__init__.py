"""``mathrecipe solve``: AIMO-style answers -- majority voting with early stopping, under a time limit.

One job per module: ``answers`` (the int0-999 format and vote pooling), ``policy`` (the stopping rule, the time share,
samples when behind, the bound on a generate call's time, a wave's price: pure functions), ``solver`` (the loop over
problems, waves and chunks, on the evaluation's ``Generator``), ``resume`` (what an output folder is bound to, what a
rerun keeps), ``clock`` (when the process started), ``cli`` (arguments, input, prompt lengths, output files).

    from mathrecipe.solve import Solver, SolveOptions
    solver = Solver(generator, tokenizer, SamplingSettings(samples=15, max_new_tokens=16384, stop_at_think=True),
                    SolveOptions(time_limit_s=5 * 3600))
    results = solver.solve([{"id": "p1", "problem": "..."}])      # results[0].answer, .stop, .tally, .tokens
"""

from mathrecipe.solve.answers import ANSWER_FORMATS, Tally, int_answer
from mathrecipe.solve.cli import add_solve_parser, read_problems, run_solve
from mathrecipe.solve.policy import CallTimes, parse_duration, planned_samples, time_share, vote_settled
from mathrecipe.solve.solver import ProblemResult, SolveOptions, Solver

__all__ = [
    "ANSWER_FORMATS",
    "CallTimes",
    "ProblemResult",
    "SolveOptions",
    "Solver",
    "Tally",
    "add_solve_parser",
    "int_answer",
    "parse_duration",
    "planned_samples",
    "read_problems",
    "run_solve",
    "time_share",
    "vote_settled",
]
