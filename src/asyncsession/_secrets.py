"""Which option values are secrets, and how options are shown without them.

Secrets never reach a repr or an error message: :func:`redact` replaces them, and
:func:`describe` shows a bad value by its type (numbers only when the key is no secret).
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping

__all__ = ["SECRET_KEYS", "describe", "is_secret_key", "redact", "short", "type_name"]

#: Keys whose values are secrets (redacted in repr, never echoed in errors). From
#: connector 4.8.1 ``DEFAULT_CONFIGURATION`` and 5.2.0
#: ``ConnectionConfig._SENSITIVE_PARAMS`` (``proxy`` may carry ``user:password@``;
#: ``token`` also carries PATs and workload-identity OIDC tokens).
SECRET_KEYS: frozenset[str] = frozenset(
    {
        "password",
        "passcode",
        "token",
        "private_key",
        "private_key_file_pwd",  # 4.x passphrase of private_key_file (5.x: deprecated alias)
        "private_key_passphrase",  # 4.x passphrase of private_key (5.x: deprecated alias)
        "private_key_password",  # 5.x passphrase
        "oauth_client_secret",
        "proxy_password",
        "proxy",  # 5.x: a proxy URL, may embed credentials
        "master_token",
        "session_token",
        "external_session_id",  # 5.x marks it sensitive (PAT_WITH_EXTERNAL_SESSION)
    }
)

#: Substrings that make an unknown key's str/bytes value be redacted too (typos such as
#: ``pasword`` must not leak through ``repr``).
_SECRET_KEY_HINTS = ("pass", "word", "pwd", "secret", "token", "credential", "private_key")

#: Shortens what an error message echoes of a value that is no secret (e.g. a bad key).
short = reprlib.Repr()
short.maxstring = 60
short.maxother = 60


def type_name(value: object) -> str:
    return type(value).__name__


def is_secret_key(key: str, value: object) -> bool:
    k = key.lower()
    if k in SECRET_KEYS:
        return True
    return isinstance(value, (str, bytes)) and any(h in k for h in _SECRET_KEY_HINTS)


def _looks_like_private_key(value: object) -> bool:
    return any("PrivateKey" in cls.__name__ for cls in type(value).__mro__)


def describe(key: str, value: object) -> str:
    """The bad value for an error message: its type; numbers are shown, text never is.

    A string may be a secret typed into the wrong key, so only plain numbers and bools
    of non-secret keys are echoed.
    """
    if is_secret_key(key, value) or not isinstance(value, (bool, int, float)):
        return type_name(value)
    return f"{type_name(value)} {value!r}"


def redact(options: Mapping[str, object]) -> dict[str, object]:
    """A copy with every secret value (and every private-key object) replaced by ``"***"``."""
    out: dict[str, object] = {}
    for key, value in options.items():
        secret = value is not None and (
            (isinstance(key, str) and is_secret_key(key, value)) or _looks_like_private_key(value)
        )
        out[key] = "***" if secret else value
    return out
