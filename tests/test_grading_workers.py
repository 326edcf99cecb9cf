"""The grader's worker processes: callable from any script, thread or forked child; start-up off the critical path."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import mathrecipe
from mathrecipe.grading import Grader, is_correct, pool
from mathrecipe.grading.protocol import decode, encode

SRC = str(Path(mathrecipe.__file__).resolve().parents[1])
HANGS = "(10^{10^{10}})!"  # math-verify's alarm ends it after >= 1 s; a shorter hard bound must kill the worker

# A script that finds mathrecipe through sys.path, not PYTHONPATH: the workers must find the same copy.
SCRIPT = f"""
import os, sys
print("started", os.getpid(), flush=True)
sys.path.insert(0, {SRC!r})
from mathrecipe.grading import is_correct
print(is_correct("\\\\boxed{{0.5}}", "1/2"), is_correct("\\\\boxed{{3}}", "4"))
"""


def _run_script(args, tmp_path, **kw):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    t = time.monotonic()
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, **kw)
    return r, time.monotonic() - t


def test_is_correct_from_a_script_fed_on_stdin(tmp_path):
    # multiprocessing's spawn re-imported "<stdin>" in each worker: FileNotFoundError, then EOFError
    r, seconds = _run_script(["-"], tmp_path, input=SCRIPT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[2:] == ["True", "False"]
    assert seconds < 30


def test_is_correct_from_a_script_without_main_guard(tmp_path):
    # spawn re-ran an unguarded script in every worker. A math_verify.py beside the script must not shadow the
    # real one in the workers either (they are started with -P).
    (tmp_path / "job.py").write_text(SCRIPT)
    (tmp_path / "math_verify.py").write_text("raise ImportError('the wrong math_verify')\n")
    r, seconds = _run_script(["job.py"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("started") == 1
    assert r.stdout.split()[2:] == ["True", "False"]
    assert seconds < 30


def _in_forked_child(check) -> int:
    """Run ``check()`` in a forked child; its exit code (0 when it returned True), or fail after 60 s."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if check() else 1
        finally:
            os._exit(code)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("grading in a forked child did not finish within 60 s")


def test_grading_in_a_forked_child_while_a_thread_holds_the_grader(tmp_path):
    with Grader(workers=1, timeout=2.0) as g:
        assert g.verify_many(["1/2"], ["0.5"]) == [True]
        busy = threading.Thread(target=g.verify_many, args=(["1"], [HANGS]))
        busy.start()
        end = time.monotonic() + 10
        while not g._lock.locked() and time.monotonic() < end:
            time.sleep(0.01)
        assert g._lock.locked()  # fork now: the child inherits a held lock and the parent's worker pipes
        code = _in_forked_child(
            lambda: g.verify_many(["1/3"], ["2/6"]) == [True] and is_correct("\\boxed{0.25}", "1/4")
        )
        busy.join(30)
        assert code == 0
        assert g.verify_many(["2"], ["4/2"]) == [True]  # the parent's workers are untouched by the child
        assert g.timeouts == 1


def _slow_start(delay: float):
    def command(parse_timeout: int) -> list[str]:
        code = (f"import sys, time; time.sleep({delay}); from mathrecipe.grading.worker import main; "
                f"sys.exit(main([{str(parse_timeout)!r}]))")
        return [sys.executable, "-P", "-c", code]

    return command


def test_a_killed_worker_is_replaced_off_the_critical_path(monkeypatch):
    # On a 16-core GPU machine the old pool waited for the replacement: 3.9 s for a 0.3 s bound. The replacement
    # takes 8 s to start here, so the bound (4 s) leaves a loaded machine 3.7 s and still tells the two apart.
    with Grader(workers=1, timeout=0.3) as g:
        assert g.verify_many(["1"], ["1.0"]) == [True]  # the first worker starts normally, outside the timed part
        monkeypatch.setattr(pool, "worker_command", _slow_start(8.0))
        t = time.monotonic()
        assert g.verify_many(["1"], [HANGS]) == [False]
        assert time.monotonic() - t < 4.0
        assert g.timeouts == 1
        t = time.monotonic()
        assert g.verify_many(["\\frac{1}{2}"], ["0.5"]) == [True]  # this call waits for the slow replacement ...
        assert time.monotonic() - t > 3.5  # ... (ready >= 8 s after the kill) which proves the first one did not


def test_jobs_go_to_the_workers_that_are_ready(monkeypatch):
    started = []
    normal = pool.worker_command

    def command(parse_timeout):
        started.append(parse_timeout)
        return normal(parse_timeout) if len(started) == 1 else _slow_start(30.0)(parse_timeout)

    monkeypatch.setattr(pool, "worker_command", command)
    with Grader(workers=2) as g:
        t = time.monotonic()
        assert g.verify_many(["1/2", "1/3", "2"], ["0.5", "2/6", "4/2"]) == [True, True, True]
        assert time.monotonic() - t < 15  # the first worker did all three while the second was still starting
        assert len(started) == 2


def test_a_worker_that_dies_mid_answer_counts_as_an_error_and_is_replaced():
    with Grader(workers=1, timeout=60.0) as g:
        assert g.verify_many(["1"], ["1.0"]) == [True]
        threading.Timer(0.5, os.kill, (g._pool._workers[0].proc.pid, signal.SIGKILL)).start()
        t = time.monotonic()
        assert g.verify_many(["1"], [HANGS]) == [False]
        assert time.monotonic() - t < 30  # ended by the crash (0.5 s in), not by the 60 s bound
        assert (g.errors, g.timeouts, len(g._cache)) == (1, 0, 1)  # the crash was not cached
        assert g.verify_many(["\\frac{1}{2}"], ["0.5"]) == [True]


def test_a_worker_killed_between_calls_is_replaced_silently():
    with Grader(workers=1) as g:
        assert g.verify_many(["1"], ["1.0"]) == [True]
        proc = g._pool._workers[0].proc
        proc.kill()
        proc.wait()
        assert g.verify_many(["\\frac{1}{2}"], ["0.5"]) == [True]
        assert (g.errors, g.timeouts) == (0, 0)


def test_a_worker_that_cannot_start_is_reported(monkeypatch):
    monkeypatch.setattr(pool, "worker_command", lambda pt: [sys.executable, "-c", "import sys; sys.exit(3)"])
    with Grader(workers=1) as g, pytest.raises(RuntimeError, match=r"exited \(code 3\) before it was ready"):
        g.verify_many(["1"], ["2"])


def test_prints_inside_a_worker_do_not_corrupt_its_answers(monkeypatch, capfd):
    code = ("import sys; from mathrecipe.grading import verify as v; judge = v.judge; "
            "v.judge = lambda *a: (print('noise', flush=True), judge(*a))[1]; "
            "from mathrecipe.grading.worker import main; sys.exit(main(sys.argv[1:]))")
    monkeypatch.setattr(pool, "worker_command", lambda pt: [sys.executable, "-P", "-c", code, str(pt)])
    with Grader(workers=1) as g:
        assert g.verify_many(["1/2", "3"], ["0.5", "4"]) == [True, False]
    assert "noise" in capfd.readouterr().err


def test_frames_carry_newlines_unicode_and_large_answers():
    for message in (["a\nb", "é ∑ \u2028"], ["\ud800", "x"], ["1", "2" * 200_000]):
        frame = encode(message)
        assert frame.count(b"\n") == 1 and decode(frame) == message
    with Grader(workers=1, timeout=20.0) as g:
        assert g.verify_many(["\\frac{1}{2}"], ["\\frac{1}\n{2}"]) == [True]
        assert g.verify_many(["1"], ["1" + "\\," * 40_000]) == [True]  # 80 kB: more than a pipe holds at once
