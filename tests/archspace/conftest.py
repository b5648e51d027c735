"""Fixtures shared by the archspace tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: tiny CPU ops are much faster single-threaded on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
