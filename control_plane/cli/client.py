"""The admin commands' way to the control plane: its HTTP API with an admin key's token.

Where the API is and which token to send: `TENANTPLANE_URL` and `TENANTPLANE_TOKEN`, or, when
either is unset, the `cli.json` that `tenantctl dev` (`make run`) writes in its data folder
(`./.data/` by default, `TENANTPLANE_DATA_DIR` to look elsewhere). Operators need no database
credentials, and every write is audited as the key's owner.

httpx (already a dependency of the product) does the HTTP; answers that are problem details
(RFC 9457) become `ApiError`, which click prints as `code: detail` with exit status 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import httpx

URL_VAR, TOKEN_VAR, DATA_DIR_VAR = "TENANTPLANE_URL", "TENANTPLANE_TOKEN", "TENANTPLANE_DATA_DIR"
STATE_FILE = "cli.json"  # written by `tenantctl dev`: {"url": ..., "token": ...}, mode 600

# named in every API command's --help (click appends the epilog)
ENV_HELP = (f"Reads {URL_VAR} and {TOKEN_VAR} (an admin key's token); when unset, the {STATE_FILE} "
            f"`tenantctl dev` writes in ./.data/ ({DATA_DIR_VAR} names another folder).")


class ApiError(click.ClickException):
    """A problem-details answer (or no answer): printed as `Error: code: detail`, exit status 1."""

    def __init__(self, code: str, detail: str, status: int | None = None, errors: Any = None) -> None:
        self.code, self.detail, self.status, self.errors = code, detail, status, errors
        message = f"{code}: {detail}"
        if errors:
            message += "".join(f"\n  {_describe(e)}" for e in (errors if isinstance(errors, list) else [errors]))
        super().__init__(message)


def _describe(error: Any) -> str:
    if isinstance(error, Mapping):
        where = str(error.get("key") or error.get("loc") or error.get("field") or "")
        what = error.get("message") or error.get("msg") or error.get("detail") or json.dumps(error)
        flag = _flag_for(where)
        return f"{where}{f' ({flag})' if flag else ''}: {what}" if where else str(what)
    return str(error)


def _flag_for(key: str) -> str | None:
    """The running command's option or argument an API field came from (`wave_size` -> --wave-size,
    `slug` -> SLUG): the operator typed the flag, not the JSON field. None when no parameter of the
    command is called that (a field the command filled in itself)."""
    context = click.get_current_context(silent=True)
    name = key.rsplit(".", 1)[-1].replace("-", "_")
    for param in context.command.params if context is not None else ():
        if param.name == name and param.name not in ("as_json", "wait"):
            return param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
    return None


def _from_state_file(env: Mapping[str, str]) -> dict[str, str]:
    folder = Path(env.get(DATA_DIR_VAR) or ".data")
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}; set {URL_VAR} and {TOKEN_VAR}") from None
    return {k: v for k, v in state.items() if isinstance(v, str)} if isinstance(state, dict) else {}


def resolve(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The API's base URL and the token, from the environment or `tenantctl dev`'s state file."""
    env = os.environ if env is None else env
    url, token = env.get(URL_VAR, "").strip(), env.get(TOKEN_VAR, "").strip()
    if not (url and token):
        state = _from_state_file(env)
        url, token = url or state.get("url", ""), token or state.get("token", "")
    if not url:
        raise click.ClickException(
            f"no control-plane API to talk to: set {URL_VAR} (e.g. http://127.0.0.1:8000), or run this "
            f"next to `make run` (it writes ./.data/{STATE_FILE}), or set {DATA_DIR_VAR} to that folder")
    if not token:
        raise click.ClickException(f"no admin token: set {TOKEN_VAR} (an admin key's token, "
                                   f"`tenantctl keys create` makes one)")
    if not url.startswith(("http://", "https://")):
        raise click.ClickException(f"{URL_VAR} must start with http:// or https://, got {url!r}")
    return url.rstrip("/"), token


class Api:
    """One httpx client per command; `call()` answers the decoded JSON or raises `ApiError`."""

    def __init__(self, url: str, token: str, timeout: float = 30) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    @classmethod
    def from_env(cls) -> Api:
        return cls(*resolve())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        extra = {"timeout": timeout} if timeout is not None else {}
        try:
            response = self._http.request(method, path, json=json_body, params=query, **extra)
        except httpx.TimeoutException:
            raise ApiError("timeout", f"the control-plane API at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ApiError("unreachable", f"cannot reach the control-plane API at {self.url} ({exc}); "
                                          f"check {URL_VAR}") from None
        if response.status_code >= 400:
            raise _problem(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.call("POST", path, json_body=body, params=params)


def _problem(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("code" in body or "detail" in body):
        return ApiError(str(body.get("code") or f"http_{response.status_code}"),
                        str(body.get("detail") or body.get("title") or ""), response.status_code,
                        body.get("errors"))
    return ApiError(f"http_{response.status_code}", response.text[:300] or response.reason_phrase,
                    response.status_code)


def segment(value: str) -> str:
    """A path segment, percent-encoded: what the user typed reaches the API as one segment (the API
    validates it and answers with a problem), never as a different path."""
    from urllib.parse import quote

    return quote(value, safe="")
