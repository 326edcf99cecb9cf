"""The ``mathrecipe`` command's duties as a process: what it opens, it closes."""

import socket

import torch.distributed as dist

from mathrecipe import cli


def _open_group() -> None:
    """A one-process gloo group, as accelerate's PartialState opens under ``accelerate launch``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def test_the_command_ends_the_process_group_it_opened(monkeypatch, tmp_path):
    from accelerate.state import PartialState

    def run(args, stages=("sft", "grpo")):
        _open_group()
        PartialState()
        return 0

    monkeypatch.setattr(cli, "cmd_run", run)
    try:
        assert cli.main(["-q", "run", f"output_dir={tmp_path}"]) == 0
        assert not dist.is_initialized()
        assert PartialState._shared_state == {}  # a later PartialState in this process starts afresh
    finally:  # whatever happened, the next test starts without a group
        if dist.is_initialized():
            dist.destroy_process_group()
        PartialState._reset_state()


def test_a_group_open_before_the_command_is_left_to_its_owner(monkeypatch, tmp_path):
    _open_group()
    try:
        monkeypatch.setattr(cli, "cmd_run", lambda args, stages=("sft", "grpo"): 0)
        assert cli.main(["-q", "run", f"output_dir={tmp_path}"]) == 0
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_the_group_is_ended_when_the_command_fails_too(monkeypatch, tmp_path):
    from mathrecipe.errors import MathRecipeError

    def run(args, stages=("sft", "grpo")):
        _open_group()
        raise MathRecipeError("a mistake, found after the launcher opened the group")

    monkeypatch.setattr(cli, "cmd_run", run)
    try:
        assert cli.main(["-q", "run", f"output_dir={tmp_path}"]) == 2
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_failed_teardown_is_a_warning_not_an_error(monkeypatch, tmp_path, caplog):
    def run(args, stages=("sft", "grpo")):
        _open_group()
        return 0

    def broken(group=None):
        raise RuntimeError("the backend cannot tear down")

    monkeypatch.setattr(cli, "cmd_run", run)
    try:
        with monkeypatch.context() as m:
            m.setattr(dist, "destroy_process_group", broken)
            assert cli.main(["-q", "run", f"output_dir={tmp_path}"]) == 0  # the command's own exit code stands
        assert "could not end the process group: the backend cannot tear down" in caplog.text
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
