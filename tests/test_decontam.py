"""Decontamination and the dedup key: spacing variants and embedded copies of benchmark problems are caught."""

import json
import re

import pytest

from mathrecipe.data.decontam import build_index, first_match, ngrams, normalise_text

MATH_SPAN = re.compile(r"(?<!\\)(\$\$?)(.+?)(?<!\\)\1", re.S)
EXTRA = ("This is a problem from an old olympiad training set, lightly edited for our course. Read it carefully, "
         "show every step of your reasoning, and check your final answer before you write it down. Problem:")
AFTER = ("Hint: start with small cases and look for a pattern. Write your final answer in a box at the end. "
         "Good luck, and remember that partial credit is given for clear and complete reasoning.")


def spaced(text: str) -> str:
    """A spacing variant a scraper or a rewriter produces: spaces just inside "$", around braces and operators."""
    return MATH_SPAN.sub(lambda m: f"{m[1]} " + re.sub(r"\s*([{}=+^_<>])\s*", r" \1 ", m[2]) + f" {m[1]}", text)


def compact(text: str) -> str:
    """The opposite variant: no spaces inside math except between letters (after a control word) or a control space."""
    squeeze = re.compile(r"(?<!\\)(?:(?<![a-zA-Z])\s+|\s+(?![a-zA-Z]))")
    return MATH_SPAN.sub(lambda m: m[1] + squeeze.sub("", m[2]) + m[1], text)


@pytest.fixture(scope="module")
def benches(shared_data):
    from mathrecipe.data.benchmarks import load_benchmark

    return dict(load_benchmark(b, shared_data / "benchmarks") for b in ("math500", "aime24", "aime25", "amc23"))


@pytest.fixture(scope="module")
def index(benches):
    return build_index(benches, 8)


def test_spacing_inside_math_normalises_alike():
    assert normalise_text("Let $ x $ be") == normalise_text("let $x$ be") == "let $x$ be"
    assert normalise_text(r"$\frac {a} {b}$") == normalise_text(r"$\frac{a}{b}$") == r"$\frac{a}{b}$"
    assert normalise_text(r"Compute \frac {a} {b} now") == normalise_text(r"compute \frac{a}{b} now")
    assert normalise_text("$x+y=3$") == normalise_text("$x + y = 3$") == "$x + y = 3$"
    assert normalise_text(r"\( x^ {2} \) and \[ y \]") == normalise_text("$x^{2}$ and $y$")
    assert normalise_text(r"$a\,b$ and $a \cdot b$") == normalise_text(r"$a b$ and $a\cdot b$")
    # whitespace after a control word before a letter is a separator, not layout
    assert normalise_text(r"$\sin x$") != normalise_text(r"$\sinx$")
    # an escaped dollar is text, and a stray "$" does not pair across a paragraph break
    assert normalise_text(r"costs \$5 and $ x $") == r"costs \$5 and $x$"
    assert normalise_text("a $5 bill\n\nthen $ x $") == normalise_text("a $5 bill\n\nthen $x$")


def test_ngrams_shape():
    assert ngrams("one two three", 8) == ["one two three"]  # shorter than n: matched whole
    assert len(ngrams(" ".join(str(i) for i in range(10)), 8)) == 3


def test_every_benchmark_item_matches_its_spacing_variants(benches, index):
    """Every real MATH-500/AIME/AMC item with math (482 of 600), respaced both ways, matches itself at 0 and 0.5."""
    items = [(f"{name}:{p['id']}", p["problem"]) for name, ps in benches.items() for p in ps if "$" in p["problem"]]
    assert len(items) > 450
    for key, problem in items:
        for variant in (spaced(problem), compact(problem)):
            for share in (0.0, 0.5):
                hit = first_match(variant, index, share)
                assert hit is not None and hit[0] == key, (key, variant, share, hit)


def test_dollar_x_and_frac_variants_of_a_real_item(benches, index):
    item = next(p for p in benches["math500"] if r"\frac{" in p["problem"] and "$x$" in p["problem"])
    key = f"math500:{item['id']}"
    variant = item["problem"].replace("$x$", "$ x $").replace(r"\frac{", r"\frac {").replace("}{", "} {")
    assert variant != item["problem"]
    assert first_match(variant, index)[0] == key
    assert first_match(variant, index, 0.5)[0] == key


def test_embedded_verbatim_copy_is_caught_at_half_overlap(benches, index):
    """An AIME problem inside ~60 extra words: most of the text's grams are new, but all of the item's are there."""
    item = next(p for p in benches["aime24"] if 25 <= len(ngrams(p["problem"], 8)) <= 45)
    text = f"{EXTRA} {item['problem']} {AFTER}"
    own = ngrams(text, 8)
    shared = [g for g in own if g in set(ngrams(item["problem"], 8))]
    assert len(shared) / len(own) < 0.5  # the text's own share alone would let it pass
    for share in (0.0, 0.5):
        assert first_match(text, index, share)[0] == f"aime24:{item['id']}"
        assert first_match(spaced(text), index, share)[0] == f"aime24:{item['id']}"


def test_min_overlap_shares():
    item = " ".join(f"w{i}" for i in range(20))  # 13 distinct 8-grams
    index = build_index({"b": [{"id": 7, "problem": item}]}, 8)
    assert first_match("x " + item.upper() + " y", index) == ("b:7", "w0 w1 w2 w3 w4 w5 w6 w7")
    assert first_match("w0 w1 w2 w3 w4 w5 w6 x", index) is None
    # 9 consecutive words of the item (2 of its 13 grams) inside 40 new words: only the strict rule flags it
    part = " ".join(f"w{i}" for i in range(9)) + " " + " ".join(f"n{i}" for i in range(40))
    assert first_match(part, index) is not None
    assert first_match(part, index, 0.5) is None
    # the whole item inside 40 new words: all of the item's grams are shared
    assert first_match(item + " " + " ".join(f"n{i}" for i in range(40)), index, 0.5)[0] == "b:7"
    # a text that is mostly the item (its own share >= 0.5) although it holds only part of the item's grams
    assert first_match(" ".join(f"w{i}" for i in range(12)), index, 0.5)[0] == "b:7"


def test_real_aime_rows_flag_exactly_the_two_math500_leaks(shared_data, index):
    rows = [json.loads(x) for x in
            (shared_data / "train-samples" / "deepscaler_aime1983_2023_train_sample.jsonl").read_text().splitlines()]
    leaked = {r["id"]: first_match(r["problem"], index, 0.5) for r in rows}
    assert {k: v[0] for k, v in leaked.items() if v} == {
        "aime2010-1-6-row560": "math500:test/intermediate_algebra/2146.json",
        "aime2015-2-6-row725": "math500:test/intermediate_algebra/1411.json"}
    # the strict rule also flags boilerplate ("where $m$ and $n$ are relatively prime positive integers")
    assert sum(first_match(r["problem"], index) is not None for r in rows) == 58


def test_spacing_variants_are_duplicates():
    import datasets

    from mathrecipe.data.build import dedup
    from mathrecipe.data.report import BuildReport

    report = BuildReport()
    report.source("s", 3)
    ds = datasets.Dataset.from_dict({
        "source": ["s"] * 3,
        "problem": [r"Find $x$ if $\frac{x}{2}=3$.", r"Find $ x $ if $\frac {x} {2} = 3$.", "Find $y$."],
        "trace_tokens": [9, 4, 5],
    })
    kept = dedup(ds, report)
    assert kept["trace_tokens"] == [4, 5]  # one row per problem, the shorter trace kept
    assert report.sources["s"]["dropped"] == {"duplicate": 1}
