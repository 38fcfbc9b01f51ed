"""A minimal raw HTTP client for the wire protocol, for what no connector API exposes."""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Any


class RawClient:
    def __init__(self, url: str, user: str = "test", password: str = "test") -> None:
        self.url = url
        reply = self.post(
            "/session/v1/login-request?databaseName=TEST_DB&schemaName=PUBLIC",
            {"data": {"LOGIN_NAME": user, "PASSWORD": password}},
            auth=False,
        )
        assert reply["success"], reply
        self.login_reply: dict[str, Any] = reply["data"]
        self.token: str = reply["data"]["token"]
        self.master_token: str = reply["data"]["masterToken"]
        self.session_id: int = reply["data"]["sessionId"]

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool = True,
        timeout: float = 30,
        token: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f'Snowflake Token="{token or self.token}"'
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def post(
        self, path: str, body: Any, *, auth: bool = True, timeout: float = 30
    ) -> dict[str, Any]:
        return self.request("POST", path, body, auth=auth, timeout=timeout)

    def renew(self) -> dict[str, Any]:
        """POST /session/token-request with the master token, as the connector does."""
        reply = self.request(
            "POST",
            "/session/token-request",
            {"oldSessionToken": self.token, "requestType": "RENEW"},
            token=self.master_token,
        )
        if reply["success"]:
            self.token = reply["data"]["sessionToken"]
        return reply

    def query(
        self,
        sql: str,
        *,
        async_exec: bool = False,
        request_id: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        rid = request_id or str(uuid.uuid4())
        return self.post(
            f"/queries/v1/query-request?requestId={rid}",
            {"sqlText": sql, "asyncExec": async_exec, "sequenceId": 1},
            timeout=timeout,
        )

    def logout(self) -> None:
        self.post("/session?delete=true", {})
