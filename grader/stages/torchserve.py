"""Talking to a running TorchServe through its published ports on 127.0.0.1.

Every call has a total deadline. `requests` only bounds each read, so a server that trickles its
answer a byte at a time would hold a call for as long as it likes; here every receive and send
waits at most for what is left of the call's deadline, headers included.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
import requests.structures
import requests.utils

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

REQUEST_TIMEOUT_S = 30.0
MAX_ANSWER_BYTES = 4 << 20  # API answers are small; a larger one is refused, not kept in memory
TOKEN_ERROR = "InvalidKeyException"


class DeadlineExceeded(requests.Timeout):
    """No complete answer within the call's total deadline."""

    def __init__(self, method: str, path: str, timeout_s: float, received: int) -> None:
        self.timeout_s = timeout_s
        self.received = received
        started = (
            f"the server had sent {received} byte{'s' * (received != 1)} of it"
            if received
            else "the server had sent nothing"
        )
        super().__init__(
            f"{method} {path} got no complete answer within {round(timeout_s, 1):g} s ({started})"
        )


class AnswerTooLarge(requests.RequestException):
    """An answer over MAX_ANSWER_BYTES."""


class _DeadlineSocket(socket.socket):
    """A socket whose every send and receive ends by one deadline, counting what it received."""

    deadline = 0.0
    received = 0

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.settimeout(left)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self._arm()
        count = super().recv_into(buffer, nbytes, flags)
        self.received += count
        return count

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._arm()
        data = super().recv(bufsize, flags)
        self.received += len(data)
        return data

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self._arm()  # since Python 3.5 the timeout bounds the whole sendall
        super().sendall(data, flags)


class _DeadlineConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, deadline: float) -> None:
        super().__init__(host, port)
        self.deadline = deadline

    def connect(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        plain = socket.create_connection((self.host, self.port), timeout=left)
        sock = _DeadlineSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.deadline = self.deadline
        self.sock = sock

    @property
    def received(self) -> int:
        return self.sock.received if isinstance(self.sock, _DeadlineSocket) else 0


def bounded_request(
    method: str,
    url: str,
    *,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    max_bytes: int = MAX_ANSWER_BYTES,
) -> requests.Response:
    """One HTTP call that is over, answered or not, within `timeout_s` from now.

    Raises DeadlineExceeded, AnswerTooLarge, or requests.ConnectionError (nothing listens, the
    connection was closed, the answer is not HTTP).
    """
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    connection = _DeadlineConnection(
        parts.hostname or "127.0.0.1", parts.port or 80, time.monotonic() + timeout_s
    )
    try:
        connection.request(
            method, path, body=body, headers={**(headers or {}), "Connection": "close"}
        )
        raw = connection.getresponse()
        chunks: list[bytes] = []
        size = 0
        while chunk := raw.read(65536):
            size += len(chunk)
            if size > max_bytes:
                raise AnswerTooLarge(
                    f"{method} {parts.path} answered with more than {max_bytes >> 20} MB"
                )
            chunks.append(chunk)
    except AnswerTooLarge:
        raise  # requests' errors are OSErrors too
    except TimeoutError:
        raise DeadlineExceeded(method, parts.path, timeout_s, connection.received) from None
    except (OSError, http.client.HTTPException) as error:
        raise requests.ConnectionError(
            f"{method} {parts.path}: {type(error).__name__}: {error}".rstrip(": ")
        ) from None
    finally:
        connection.close()
    response = requests.Response()
    response.status_code = raw.status
    response.reason = raw.reason
    response.url = url
    response.headers = requests.structures.CaseInsensitiveDict(raw.getheaders())
    response.encoding = requests.utils.get_encoding_from_headers(response.headers)
    response._content = b"".join(chunks)
    return response


@dataclass
class TorchServeAPI:
    """The inference and management APIs of one server, with its tokens once they are known.

    Calls share nothing (each has its own connection), so threads may use one object at once.
    """

    inference_url: str
    management_url: str
    inference_key: str | None = None
    management_key: str | None = None
    predict_timeout_s: float = REQUEST_TIMEOUT_S  # a stuck handler costs this per request
    request_timeout_s: float = REQUEST_TIMEOUT_S  # every other call

    def _headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _timeout(self, timeout_s: float | None) -> float:
        return (
            self.request_timeout_s if timeout_s is None else min(timeout_s, self.request_timeout_s)
        )

    def ping(self, timeout_s: float | None = None) -> requests.Response:
        return bounded_request(
            "GET",
            f"{self.inference_url}/ping",
            headers=self._headers(self.inference_key),
            timeout_s=self._timeout(timeout_s),
        )

    def models(self, timeout_s: float | None = None) -> requests.Response:
        return bounded_request(
            "GET",
            f"{self.management_url}/models",
            headers=self._headers(self.management_key),
            timeout_s=self._timeout(timeout_s),
        )

    def describe(self, model: str, timeout_s: float | None = None) -> requests.Response:
        return bounded_request(
            "GET",
            f"{self.management_url}/models/{model}",
            headers=self._headers(self.management_key),
            timeout_s=self._timeout(timeout_s),
        )

    def predict(self, model: str, body: bytes) -> requests.Response:
        return bounded_request(
            "POST",
            f"{self.inference_url}/predictions/{model}",
            body=body,
            headers=self._headers(self.inference_key),
            timeout_s=self.predict_timeout_s,
        )

    def use_keys(self, keys: dict[str, Any]) -> None:
        """Take the tokens from a parsed `key_file.json`."""
        self.inference_key = _key(keys, "inference")
        self.management_key = _key(keys, "management")


def _key(keys: dict[str, Any], api: str) -> str | None:
    entry = keys.get(api)
    return str(entry["key"]) if isinstance(entry, dict) and "key" in entry else None


def is_token_error(response: requests.Response) -> bool:
    """TorchServe >= 0.11.1 refuses calls without a valid token with HTTP 400 (not 401)."""
    return response.status_code in (400, 401, 403) and TOKEN_ERROR in response.text


def json_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        return None


def worker_statuses(description: Any) -> list[str]:
    """The statuses of every worker in a `GET /models/<name>` answer (a list of versions)."""
    versions = description if isinstance(description, list) else [description]
    statuses: list[str] = []
    for version in versions:
        if isinstance(version, dict):
            for worker in version.get("workers") or []:
                if isinstance(worker, dict):
                    statuses.append(str(worker.get("status", "?")))
    return statuses


def model_names(listing: Any) -> list[str]:
    models = listing.get("models") if isinstance(listing, dict) else None
    return [str(m.get("modelName")) for m in models or [] if isinstance(m, dict)]
