"""A small blocking client of a node's API, for wallets, scripts and tests."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


class ApiError(RuntimeError):
    """A node's error answer: its HTTP status, the error for a person and the code for a
    program (ledger.tx.CODES for a refused transaction; None from an older node)."""

    def __init__(self, status: int, error: str, code: str | None = None):
        super().__init__(f"{status}: {error}")
        self.status = status
        self.error = error
        self.code = code


def http_json(url: str, timeout: float = 2.0, body: dict | None = None):
    """GET (or POST a JSON body) and decode the JSON answer: (status, object)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw or b"{}")
        except ValueError:
            return e.code, {"error": raw.decode(errors="replace")[:200]}


class NodeClient:
    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str) -> dict:
        status, body = http_json(self.url + path, self.timeout)
        if status != 200:
            raise ApiError(status, body.get("error", str(body)), body.get("code"))
        return body

    def submit(self, raw: bytes) -> str:
        status, body = http_json(self.url + "/v1/tx", self.timeout, {"tx": raw.hex()})
        if status != 202:
            raise ApiError(status, body.get("error", str(body)), body.get("code"))
        return body["hash"]

    def put_blob(self, data: bytes, headers: dict) -> str:
        """Store a blob (headers: blobs.sign_upload's) and return its hash."""
        req = urllib.request.Request(self.url + "/v1/blobs", data=data, headers={
            "Content-Type": "application/octet-stream", **headers})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())["hash"]
        except urllib.error.HTTPError as e:
            try:
                body = json.loads(e.read() or b"{}")
            except ValueError:
                body = {}
            raise ApiError(e.code, body.get("error", e.reason), body.get("code")) from None

    def status(self) -> dict:
        return self.get("/v1/status")

    def account(self, address: str) -> dict:
        return self.get(f"/v1/accounts/{address}")

    def tx(self, tx_hash: str) -> dict | None:
        status, body = http_json(f"{self.url}/v1/tx/{tx_hash}", self.timeout)
        return body if status == 200 else None

    def wait_committed(self, tx_hash: str, timeout: float = 30.0) -> dict:
        """Poll until the transaction is committed (or failed) here; its status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.tx(tx_hash)
            if st and st["status"] in ("committed", "failed"):
                return st
            if st and st["status"] == "rejected":
                raise ApiError(422, st["error"], st.get("code"))
            time.sleep(0.05)
        raise TimeoutError(f"{tx_hash} not committed at {self.url} within {timeout} s")

    def wait_height(self, height: int, timeout: float = 30.0, interval: float = 0.05) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                st = self.status()
            except (OSError, ApiError):
                st = None                         # not up yet: keep polling until the deadline
            if st and st["height"] >= height:
                return st
            time.sleep(interval)
        raise TimeoutError(f"{self.url} did not reach height {height} within {timeout} s")
