"""The ``threads`` configuration value."""

import pytest
import torch

from archspace.errors import UsageError
from ghn.threads import auto_threads, set_threads


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


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
