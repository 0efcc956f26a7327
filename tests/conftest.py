"""Shared by every suite: each test gets its own state dir, so the default
--cache-dir (the journal, $XDG_STATE_HOME/bookmarkfs) never outlives a test
nor lands in the home directory of whoever runs the tests."""
import pytest


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
