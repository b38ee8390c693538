"""Talking to a running TorchServe through its published ports on 127.0.0.1."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import requests

REQUEST_TIMEOUT_S = 30.0
TOKEN_ERROR = "InvalidKeyException"


@dataclass
class TorchServeAPI:
    """The inference and management APIs of one server, with its tokens once they are known."""

    inference_url: str
    management_url: str
    inference_key: str | None = None
    management_key: str | None = None
    session: requests.Session = field(default_factory=requests.Session)
    predict_timeout_s: float = REQUEST_TIMEOUT_S  # a stuck handler costs this per request

    def _headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def ping(self) -> requests.Response:
        return self.session.get(
            f"{self.inference_url}/ping",
            headers=self._headers(self.inference_key),
            timeout=REQUEST_TIMEOUT_S,
        )

    def models(self) -> requests.Response:
        return self.session.get(
            f"{self.management_url}/models",
            headers=self._headers(self.management_key),
            timeout=REQUEST_TIMEOUT_S,
        )

    def describe(self, model: str) -> requests.Response:
        return self.session.get(
            f"{self.management_url}/models/{model}",
            headers=self._headers(self.management_key),
            timeout=REQUEST_TIMEOUT_S,
        )

    def predict(self, model: str, body: bytes) -> requests.Response:
        return self.session.post(
            f"{self.inference_url}/predictions/{model}",
            data=body,
            headers=self._headers(self.inference_key),
            timeout=self.predict_timeout_s,
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
