"""Recording the calls of a function without changing what it returns (so a test can tell
which path ran: a silent fallback fails it)."""

from __future__ import annotations


def record_calls(monkeypatch, owner, name: str, record=lambda *args, **kwargs: 1) -> list:
    """Replace ``owner.name`` for this test by a wrapper that appends ``record(*args,
    **kwargs)`` to the returned list on each call and then calls the original."""
    calls = []
    original = getattr(owner, name)

    def recording(*args, **kwargs):
        calls.append(record(*args, **kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return calls
