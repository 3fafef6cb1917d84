"""`run_isolated`: a stage in a fresh process returns its result, raises its errors, and keeps the caller's
torch threads, stdout redirection and progress-bar setting."""
import contextlib
import os
import sys

import pytest
import torch

from unmask.errors import UnmaskError
from unmask.isolate import peak_rss_gib, run_isolated


def test_the_stage_runs_in_another_process_with_the_callers_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_isolated(os.getpid) != os.getpid()
        assert run_isolated(torch.get_num_threads) == 1
    finally:
        torch.set_num_threads(threads)
    assert peak_rss_gib() > 0


def test_errors_reach_the_caller_and_a_dead_stage_is_named():
    with pytest.raises(ValueError, match="invalid literal"):
        run_isolated(int, "not a number")
    with pytest.raises(UnmaskError, match="the fine-tuning process died"):
        run_isolated(os._exit, 3, what="fine-tuning")


def test_status_lines_follow_the_callers_stdout_redirection(capfd):
    run_isolated(print, "plain line")
    with contextlib.redirect_stdout(sys.stderr):  # what `--json -` does
        run_isolated(print, "status line")
    out, err = capfd.readouterr()
    assert "plain line" in out and "status line" in err and "status line" not in out
