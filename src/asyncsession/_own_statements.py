"""What the library's own statements share (``use``, ``begin``/``commit``/``rollback``,
restoring a pooled session, logout): a result handler that keeps nothing, and the
session id their warnings name."""

from __future__ import annotations

from typing import Any


def ignore_result(cursor: Any) -> None:
    """The result handler of a statement whose rows nobody reads."""
    return None


def session_id_for_log(owner: Any) -> Any:
    """``owner.session_id`` (a connection or an ``AsyncSession``), or ``"?"``: a warning
    about a broken session must not fail on asking which one it was."""
    try:
        return owner.session_id
    except Exception:
        return "?"
