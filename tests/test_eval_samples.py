"""samples.jsonl: a file cut anywhere (kill -9) resumes to exactly problems x samples rows, nothing duplicated."""

import json
import os

from mathrecipe.evaluate import samples as S


def _rows(problems=3, n=2, bench="b"):
    return [{"benchmark": bench, "id": f"p{i}", "sample": j, "completion": f"so \\boxed{{{i}}} é", "tokens": 5,
             "finished": True, "extracted": str(i), "answer": str(i), "correct": True, "boxes": [[4, True]]}
            for i in range(problems) for j in range(n)]


def _lines(rows):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def test_a_cut_anywhere_resumes_to_exactly_the_full_set(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # ~1000 rewrites: durability is not what is tested here
    full = _rows()
    data = _lines(full)
    path = tmp_path / "samples.jsonl"
    ends = [i + 1 for i, c in enumerate(data) if c == ord("\n")]
    cuts = sorted(set(range(0, len(data), 5)) | {e + d for e in [0, *ends] for d in (-2, -1, 0, 1) if 0 <= e + d <= len(data)})
    for cut in cuts:
        path.write_bytes(data[:cut])
        kept = S.compact(path, {"b": 2})
        after = S.read_samples(path)
        assert after.clean and after.bad_lines == 0 and after.rows == kept
        done = {S.row_key(r) for r in kept}
        for key in done:  # only whole problems survive
            assert sum(S.row_key(r) == key for r in kept) == 2
        # the rerun appends the problems that are not done
        S.append_samples(path, [r for r in full if S.row_key(r) not in done])
        final = S.read_samples(path).rows
        keys = [(r["id"], r["sample"]) for r in final]
        assert sorted(keys) == sorted((r["id"], r["sample"]) for r in full) and len(set(keys)) == len(full), cut


def test_cut_first_sample_of_a_problem_is_dropped_before_appending(tmp_path):
    # defect 1: the cut-off line was a problem's FIRST sample, so no row was dropped and new rows were glued onto it
    full = _rows()
    data = _lines(full[:4]) + json.dumps(full[4]).encode()[:25]
    path = tmp_path / "samples.jsonl"
    path.write_bytes(data)
    f = S.read_samples(path)
    assert (len(f.rows), f.bad_lines, f.clean) == (4, 1, False)
    assert len(S.compact(path, {"b": 2})) == 4
    S.append_samples(path, full[4:])
    assert S.read_samples(path).rows == full


def test_complete_last_row_without_newline_gets_one(tmp_path):
    full = _rows()
    path = tmp_path / "samples.jsonl"
    path.write_bytes(_lines(full)[:-1])  # killed between the closing brace and the newline
    assert len(S.compact(path, {"b": 2})) == 6
    assert path.read_bytes().endswith(b"\n")


def test_reader_goes_on_past_a_broken_line(tmp_path):
    # a file damaged by the old resume (a cut line with a later row glued onto it): only that line is lost
    full = _rows(problems=4)
    glued = json.dumps(full[2])[:30] + json.dumps(full[3])
    path = tmp_path / "samples.jsonl"
    path.write_text(_lines(full[:2]).decode() + glued + "\n" + _lines(full[4:]).decode())
    f = S.read_samples(path)
    assert f.bad_lines == 1 and f.rows == full[:2] + full[4:]
    kept = S.compact(path, {"b": 2})
    assert {r["id"] for r in kept} == {"p0", "p2", "p3"}  # p1 lost both samples' lines; redone on resume


def test_duplicates_and_out_of_range_samples_are_dropped(tmp_path):
    full = _rows()
    extra = dict(full[0], sample=7)
    kept, dropped = S.complete_rows(full + [full[1], extra], {"b": 2})
    assert kept == full and dropped == 2
    other = _rows(bench="other", n=3)[:2]  # a benchmark without a known count: kept as it is
    assert S.complete_rows(other, {"b": 2}) == (other, 0)
