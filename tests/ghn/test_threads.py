"""The ``threads`` configuration value and flushing denormals."""

import platform
import subprocess
import sys

import pytest
import torch

from archspace.errors import UsageError
from ghn.threads import auto_threads, set_threads


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
    torch.set_flush_denormal(False)  # set_threads turns it on; keep this process's other tests as they were


def test_auto_divides_the_cpus_among_the_node_processes(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert auto_threads() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert auto_threads() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert auto_threads() == 1
    assert set_threads("auto") == 1 and torch.get_num_threads() == 1


def test_integers_apply_and_null_leaves_the_setting():
    assert set_threads(1) == 1 and torch.get_num_threads() == 1
    assert set_threads("2") == 2 and torch.get_num_threads() == 2
    assert set_threads(None) == 2


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5j])
def test_bad_values_say_what_is_allowed(bad):
    with pytest.raises(UsageError, match="positive integer, 'auto' or null"):
        set_threads(bad)


_DENORMALS = """
import torch
from ghn.threads import flush_denormals
torch.set_num_threads(2)
x = torch.full((1 << 22,), 1e-39)  # large enough to be split across the threads; the pool starts here
ok = flush_denormals() if {flush} else None
y = x * 1.0
print(ok, int((y != 0).sum()))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64", "aarch64", "arm64"),
                    reason="flush-to-zero is an x86 / AArch64 CPU mode")
def test_flush_denormals_reaches_every_thread_of_the_pool():
    def run(code: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        return out[0], int(out[1])

    assert run(_DENORMALS.format(flush=False)) == ("None", 1 << 22)  # a denormal float32, kept without the mode
    # Called before the thread pool starts: every element is flushed, whichever thread computed it.
    early = _DENORMALS.replace("x = torch.full", "ok0 = flush_denormals()\nx = torch.full")
    assert run(early.format(flush=False).replace("print(ok,", "print(ok0,")) == ("True", 0)
    # Called after: the pool's other thread keeps the old mode (what the docstring warns about).
    ok, kept = run(_DENORMALS.format(flush=True))
    assert ok == "True" and 0 < kept < 1 << 22
