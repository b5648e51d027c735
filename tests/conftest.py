"""Fixtures shared by every test package."""

import pytest

from ghn.threads import one_thread as _one_thread_block


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: tiny CPU ops are much faster single-threaded on a busy 2-core machine
    (apply it to a module with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    with _one_thread_block():
        yield
