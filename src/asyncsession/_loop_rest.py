"""4.x's status requests and result fetches on the event loop, the connector as fallback.

``LoopRest`` sends them over the session's keep-alive connections (``_http.LoopHttp``) and
reads the replies as the connector would; ``None`` from ``result``/``status`` (or a reply
``load_result`` finds is the connector's to handle) means the connector's own call does
it, in a thread, as before. The executor keeps the rules of waiting and aborting.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._driver import Connector4
    from ._http import LoopHttp, Reply


class LoopRest:
    def __init__(self, driver: Connector4) -> None:
        self._driver = driver
        #: The session's keep-alive connections (made on first use).
        self.http: LoopHttp | None = None

    def available(self) -> bool:
        """Whether this connector release's cursor has the steps ``load_result`` needs."""
        return self._driver.loop_rest()

    def _connections(self) -> LoopHttp:
        if self.http is None:
            from ._http import LoopHttp  # imported on first use: ssl, gzip, anyio streams

            self.http = LoopHttp()
        return self.http

    async def aclose(self) -> None:
        """Close the connections (the session is closing); none is made after this."""
        await self._connections().aclose()

    async def result(self, connection: Any, query_id: str) -> Reply | None:
        """``GET /queries/{qid}/result``; ``None`` if the connector must send it."""
        from ._http import SNOWFLAKE_JSON, Unavailable, rest_request

        try:
            target, path, headers, timeout = rest_request(
                connection, f"/queries/{query_id}/result", accept=SNOWFLAKE_JSON
            )
            return await self._connections().get(target, path, headers, timeout)
        except Unavailable:
            return None

    def load_result(self, cursor: Any, query_id: str, reply: Reply | None) -> None:
        """In a worker: load ``reply`` into ``cursor``, or fetch it with the connector's call
        if there is none or it is the connector's to handle (a token to renew, ...)."""
        if reply is not None:
            from ._http import Unavailable

            try:
                ret = reply.json()
            except Unavailable:
                ret = None
            if ret is not None and not self._driver.reply_needs_connector(ret):
                self._driver.load_result(cursor, ret)
                return
            self._connections().handed_back += 1
        self._driver.fetch_result(cursor, query_id)

    async def status(self, connection: Any, query_id: str) -> tuple[str, bool] | None:
        """One status request; ``None`` if the connector must send it (in a thread: a
        refusal, whose token it renews or whose error it raises, and the rest)."""
        from ._http import JSON, Unavailable, quoted, rest_request

        try:
            uuid.UUID(query_id)  # else the connector's ValueError, from its own call
        except ValueError:
            return None
        http = self._connections()
        try:
            target, path, headers, timeout = rest_request(
                connection, "/monitoring/queries/" + quoted(query_id), accept=JSON
            )
            reply = await http.get(target, path, headers, timeout)
            seen = self._driver.read_status_reply(connection, reply.json())
        except Unavailable:
            return None
        if seen is None:
            http.handed_back += 1
        return seen
