"""A local Snowflake for tests: an emulator process the real connector talks to over HTTP.

Install with ``pip install 'asyncsession[testing]'``. The server is built on fakesnow
(DuckDB): SQL semantics are DuckDB's through fakesnow's translation, not Snowflake's
optimizer. What it adds: async execution, result polling, aborts that really stop
queries, many queries at once per session, ``SYSTEM$WAIT``, query history, and fault
injection.
"""

from ._launcher import EmulatorError, LocalSnowflake

__all__ = ["EmulatorError", "LocalSnowflake"]
