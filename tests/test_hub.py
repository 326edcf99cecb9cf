"""No hub waits: a missing local path or an unreachable hub fails in seconds with one line."""

import json
import socket
import time
from pathlib import Path

import pytest

from mathrecipe import hub
from mathrecipe.cli import main
from mathrecipe.errors import MathRecipeError
from mathrecipe.hub import looks_local, require_hub, resolve

HUB_ID = "open-r1/OpenR1-Math-220k"


@pytest.fixture(autouse=True)
def bare_env(tmp_path, monkeypatch):
    """Empty HF caches, online, no proxy: each test sets what it needs."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HTTPS_PROXY",
                "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture()
def listening():
    """A local TCP port that accepts connections (a reachable 'hub')."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


# "Fails fast" is the behaviour under test: an unanswered hub costs huggingface_hub's retries (minutes); the bound
# leaves a loaded 2-core machine a generous margin over the ~0.1 s these take.
FAST_S = 20


def one_line_error(fn, *args, **kwargs) -> str:
    t = time.perf_counter()
    with pytest.raises(MathRecipeError) as e:
        fn(*args, **kwargs)
    assert time.perf_counter() - t < FAST_S
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_looks_local():
    for name in ["d/x.jsonl", "./d/x.jsonl", "runs/x/finall", "/abs/model", "~/data", "x.parquet", "C:\\data\\x",
                 "model.safetensors", "recipe.yaml", "owner/name.json", "has space/x"]:
        assert looks_local(name), name
    for name in [HUB_ID, "Qwen/Qwen2.5-Math-7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "gpt2"]:
        assert not looks_local(name), name


@pytest.mark.parametrize("name", ["d/x.jsonl", "./d/x.jsonl", "runs/x/finall"])
def test_missing_local_paths_fail_at_once_everywhere(name, tmp_path, capsys):
    (tmp_path / "runs" / "x" / "final").mkdir(parents=True)
    from mathrecipe.data.io import load_table
    from mathrecipe.data.sources import load_source

    msg = one_line_error(resolve, name, "model.name_or_path", "Point it at a model folder.")
    assert msg.startswith(f"model.name_or_path: {name}: no such file or folder") and "model folder" in msg
    assert "no such file or folder" in one_line_error(load_table, name, what="data.sft_path")
    assert "data.build.openr1" in one_line_error(load_source, name, what="data.build.openr1")
    if name == "runs/x/finall":
        assert "did you mean runs/x/final?" in msg
    else:
        assert "(d does not exist)" in msg
    # through the CLI: exit 2, one line, no traceback, before any model loads
    t = time.perf_counter()
    source = json.dumps([{"kind": "openr1", "path": name}])
    assert main(["data", "build", f"data.build.sources={source}", "data.build.tokenizer=also/missing/tok"]) == 2
    assert time.perf_counter() - t < FAST_S
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mathrecipe: error: data.build.sources[0].path: {name}: no such file or folder")
    assert len(err.splitlines()) == 1


def test_hub_id_offline_fails_at_once_naming_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = one_line_error(require_hub, HUB_ID, "data.build.openr1", "Set data.build.openr1 to a local file.")
    assert HUB_ID in msg and "HF_HUB_OFFLINE" in msg and "data.build.openr1" in msg and "local file" in msg
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert "HF_DATASETS_OFFLINE" in one_line_error(resolve, HUB_ID, "data.build.openr1", "x")


def test_unreachable_endpoint_fails_within_seconds(monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    msg = one_line_error(require_hub, HUB_ID, "data.build.openr1", "Use a local file.")
    assert HUB_ID in msg and "127.0.0.1:9" in msg and "cannot be reached" in msg
    # the registry benchmarks read from the hub, and hub models, fail the same way
    from mathrecipe.data.benchmarks import load_benchmark

    assert "HuggingFaceH4/MATH-500" in one_line_error(load_benchmark, "math500")
    assert "--data-dir" in one_line_error(load_benchmark, "math500")
    assert "Qwen/Qwen2.5-Math-7B" in one_line_error(resolve, "Qwen/Qwen2.5-Math-7B", "model.name_or_path", "x")
    t = time.perf_counter()
    source = json.dumps([{"kind": "openr1", "path": HUB_ID}])
    assert main(["data", "build", f"data.build.sources={source}", "data.build.tokenizer=gpt2"]) == 2
    assert time.perf_counter() - t < FAST_S
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and HUB_ID in err


def test_a_hung_probe_is_abandoned_at_its_timeout(monkeypatch):
    """Name resolution or a dropped SYN can hang far longer than the timeout: the probe does not wait for it."""
    monkeypatch.setenv("HF_ENDPOINT", "https://hung.example:8443")

    def hang(*args, **kwargs):
        time.sleep(60)  # in the probe's daemon thread, abandoned
        raise OSError("too late")

    monkeypatch.setattr(socket, "create_connection", hang)
    t = time.perf_counter()
    why = hub.hub_unreachable(timeout=0.5)
    assert time.perf_counter() - t < FAST_S  # the bound is the behaviour: far below the 60 s the connection hangs
    assert why == "hung.example:8443: no answer within 0.5 s"


def test_reachable_hub_passes_and_the_probe_runs_once(monkeypatch, listening):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listening}")
    assert resolve(HUB_ID, "data.build.openr1", "x") == HUB_ID
    calls = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: calls.append(a))
    require_hub(HUB_ID, "data.build.openr1", "x")
    assert calls == []  # cached for the process


def test_probe_goes_through_the_proxy(monkeypatch, listening):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # not resolvable: only the proxy is reachable
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listening}")
    assert hub.hub_unreachable() is None
    monkeypatch.setenv("NO_PROXY", "hub.invalid")
    assert hub.hub_unreachable() is not None


def test_cached_ids_return_at_once_even_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = tmp_path / "hub-cache" / "models--Qwen--Qwen2.5-Math-7B" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    require_hub("Qwen/Qwen2.5-Math-7B", "model.name_or_path", "x")
    # a dataset prepared by `datasets` (what its offline mode reloads): owner___snake_case_name/config/version/hash
    (tmp_path / "datasets-cache" / "open-r1___open_r1-math-220k" / "default" / "0.0.0" / "f00").mkdir(parents=True)
    assert resolve(HUB_ID, "data.build.openr1", "x") == HUB_ID
    # an empty snapshot folder is not a cached model
    (tmp_path / "hub-cache" / "models--a--b" / "snapshots" / "abc").mkdir(parents=True)
    assert "'a/b'" in one_line_error(require_hub, "a/b", "model.name_or_path", "x")


def test_existing_paths_resolve_to_paths(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jsonl").write_text("{}\n")
    assert resolve("d/x.jsonl", "data", "x") == Path("d/x.jsonl")
    assert resolve(Path("d"), "data", "x") == Path("d")
    (tmp_path / "owner" / "name").mkdir(parents=True)  # a local folder shaped like a hub id wins, as in HF's loaders
    assert resolve("owner/name", "model.name_or_path", "x").is_dir()
