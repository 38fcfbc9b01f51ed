"""asyncsession: an async Snowflake session."""

from ._errors import ConfigurationError, QueryCancelledError, SessionClosedError

__version__ = "0.1.0.dev0"

__all__ = ["ConfigurationError", "QueryCancelledError", "SessionClosedError", "__version__"]
