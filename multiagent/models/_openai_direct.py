"""``chat.completions`` for ``ChatOpenAI``, posting LangChain's payload as it is.

``ChatOpenAI`` builds its request body itself (plain dicts, lists and strings, ready for JSON)
and hands it to the SDK's ``chat.completions.create``, which first walks every value against
the SDK's typed parameter declarations (``maybe_transform``: aliases, dates, iterables; none of
which a LangChain payload holds) and then builds a typed ``ChatCompletion`` from the answer,
which ``ChatOpenAI`` at once dumps back to a dict. On a worker those two passes were the
largest single share of the CPU a call costs (measured with ``py-spy``, ``bench scale
--workers``): about a sixth, on a machine whose cores bound how many calls its workers serve.

:class:`DirectCompletions` stands where ``ChatOpenAI`` keeps its ``client`` (and
``async_client``) and answers the two calls it makes there for a whole answer, ``create`` and
``with_raw_response.create``, through the SDK client's public ``post`` with ``cast_to`` the
HTTP response: the same URL, headers, authentication, timeout and error mapping (a 429 is still
``openai.RateLimitError`` with its headers), the body sent unchanged, the answer read as JSON,
which ``ChatOpenAI`` takes as it takes a dumped model. Streams, and anything else, go to the
SDK's own resource. Nothing here is LangChain's or the SDK's private API; a library that did
this does not exist (the SDK offers no switch to skip its transform), so it is written here.

A model built by :func:`~multiagent.models.factory.build_chat_model` goes one step further when
its client authenticates with a plain API key and no proxy applies to its base URL: a whole
answer is exchanged over a :class:`DirectLine`, a urllib3 connection pool holding the client's
own URL, headers (its ``default_headers`` and ``auth_headers``) and timeout. The SDK's request
path (options model, header merge, httpx's client and httpcore's connection on top of h11) cost
1.1 ms of CPU per call against 0.5 ms for the same exchange through urllib3, measured on the
simulator with five threads: on a worker, the largest share of a call left after the transform.
Failures still read as the SDK's: an error status becomes the SDK's exception for that status
(``openai.RateLimitError`` for a 429, its headers and body kept), a failed connection
``openai.APIConnectionError``, a timeout ``openai.APITimeoutError``; a redirect is handed to the
SDK, which follows it. A worker's in-flight bound (:mod:`multiagent.models._in_flight`) is held
around the exchange as its HTTP transport holds it for the SDK's requests, and a second Ctrl-C
cuts the exchange as it cuts the SDK's (:mod:`multiagent.models._cut_on_stop`). Any other
client (workload identity, a proxy, per-call headers or timeout) keeps the SDK's path.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2
import openai
import urllib3
from langchain_openai import ChatOpenAI

from multiagent.models._cut_on_stop import cut_pool_on_stop_now

if TYPE_CHECKING:
    from multiagent.models._in_flight import InFlightGate

_PATH = "/chat/completions"
#: ``create`` keywords that are request options, not body fields (``make_request_options``)
_OPTIONS = {"extra_headers": "headers", "extra_query": "params", "timeout": "timeout"}
#: Request options a :class:`DirectLine` serves (others, per-request headers or timeout: the SDK)
_LINE_OPTIONS = {"security", "extra_json"}
#: Connections a line keeps: as many calls as an adaptive limit may allow at once
#: (``BackpressureConfig.concurrency_cap``); urllib3 opens them only when used, and closes (with
#: a logged warning) any connection that comes back to a full pool
_POOL_SIZE = 256


#: The SDK's exception for each error status it names (``OpenAI._make_status_error``).
_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


class LineAnswer:
    """A :class:`DirectLine` answer, read as :class:`RawAnswer` reads the SDK's."""

    def __init__(self, headers: dict[str, str], content: bytes) -> None:
        self.headers = headers
        self._content = content

    def parse(self) -> Any:
        """The answer as JSON (a non-JSON body as text, as the SDK gives it)."""
        if "json" not in self.headers.get("content-type", ""):
            return self._content.decode("utf-8", errors="replace")
        return json.loads(self._content)


class DirectLine:
    """Whole-answer exchanges with one base URL over a urllib3 pool (see the module docstring).

    Args:
        base_url: The client's base URL (``.../v1/``).
        headers: Every header a request carries: the client's defaults and authentication.
        timeout: The client's timeout (seconds, or httpx2's ``Timeout``).
        gate: The in-flight bound held around each exchange, if any.
        pool_size: Connections kept open for reuse.
    """

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float | httpx2.Timeout | None,
        gate: InFlightGate | None = None,
        pool_size: int = _POOL_SIZE,
    ) -> None:
        self.url = base_url.rstrip("/") + _PATH
        self._path = urlsplit(self.url).path
        self._headers = {**headers, "Accept-Encoding": "gzip, deflate"}
        self._gate = gate
        self._timeout = _line_timeout(timeout)
        pool_options: dict[str, Any] = {"maxsize": pool_size, "retries": False}
        if self.url.startswith("https:"):
            pool_options["ssl_context"] = httpx2.create_ssl_context()  # the SDK's CA bundle
        self._pool = urllib3.connection_from_url(self.url, **pool_options)
        cut_pool_on_stop_now(self._pool)  # a second Ctrl-C cuts its exchanges

    def post(self, body: Mapping[str, Any]) -> LineAnswer | None:
        """Send ``body``; the answer, or ``None`` for a redirect (the SDK then follows it).

        Raises:
            openai.APIStatusError: The server answered with an error status (the SDK's
                subclass for it).
            openai.APIConnectionError: No answer (``openai.APITimeoutError`` for a timeout).
        """
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        gate = self._gate
        if gate is not None:
            gate.acquire()
        try:
            response = self._pool.urlopen(
                "POST", self._path, body=data, headers=self._headers, retries=False,
                redirect=False, timeout=self._timeout, preload_content=True,
            )  # fmt: skip
        except urllib3.exceptions.NewConnectionError as exc:  # urllib3 files it under timeouts
            raise openai.APIConnectionError(request=self._request()) from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise openai.APITimeoutError(request=self._request()) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise openai.APIConnectionError(request=self._request()) from exc
        finally:
            if gate is not None:
                gate.release()
        status: int = response.status
        if 300 <= status < 400:
            return None
        found = {name.lower(): value for name, value in response.headers.items()}
        if status >= 400:
            raise self._status_error(status, found, response.data)
        return LineAnswer(found, response.data)

    def _request(self) -> httpx2.Request:
        return httpx2.Request("POST", self.url)

    def _status_error(
        self, status: int, headers: dict[str, str], content: bytes
    ) -> openai.APIStatusError:
        """The SDK's exception for an error answer: its class, message and body."""
        response = httpx2.Response(
            status, headers=headers, content=content, request=self._request()
        )
        message = f"Error code: {status}"
        body: Any = content.decode("utf-8", errors="replace").strip()
        with contextlib.suppress(ValueError):  # a body that is no JSON stays text
            body = json.loads(body)
        error = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
            message += f" - {error['message']}"
        return status_error_class(status)(message, response=response, body=error)


def status_error_class(status: int) -> type[openai.APIStatusError]:
    """The SDK's exception class for an error status, as the SDK's client picks it."""
    found = _STATUS_ERRORS.get(status)
    if found is not None:
        return found
    return openai.InternalServerError if status >= 500 else openai.APIStatusError


def _line_timeout(timeout: float | httpx2.Timeout | None) -> urllib3.Timeout:
    if isinstance(timeout, httpx2.Timeout):
        return urllib3.Timeout(connect=timeout.connect, read=timeout.read)
    return urllib3.Timeout(connect=timeout, read=timeout)


def direct_line(client: Any, *, gate: InFlightGate | None = None) -> DirectLine | None:
    """A :class:`DirectLine` for ``client`` (``openai.OpenAI``), or ``None`` when its requests
    need the SDK's path: authentication other than a plain key, or a proxy for its URL."""
    auth: dict[str, str] = dict(client.auth_headers)
    if getattr(client, "workload_identity", None) is not None or "Authorization" not in auth:
        return None
    base_url = str(client.base_url)
    parts = urlsplit(base_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if parts.scheme not in ("http", "https") or (
        proxy and not urllib.request.proxy_bypass(parts.hostname or "")
    ):
        return None
    headers = {
        name: value
        for name, value in {**client.default_headers, **auth}.items()
        if isinstance(value, str)  # the SDK's Omit marks a header left out
    }
    return DirectLine(base_url, headers, timeout=client.timeout, gate=gate)


class RawAnswer:
    """What ``with_raw_response.create`` returns: the HTTP response, parsed on request."""

    def __init__(self, response: httpx2.Response) -> None:
        self.http_response = response

    @property
    def headers(self) -> httpx2.Headers:
        return self.http_response.headers

    def parse(self) -> Any:
        """The answer as JSON (a non-JSON body as text, as the SDK gives it)."""
        response = self.http_response
        if "json" not in response.headers.get("content-type", ""):
            return response.text
        return response.json()


def _request(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``create``'s keywords split into the body and the request options."""
    body = dict(params)
    options: dict[str, Any] = {"security": {"bearer_auth": True}}
    for keyword, option in _OPTIONS.items():
        if keyword in body:
            options[option] = body.pop(keyword)
    extra = body.pop("extra_body", None)
    if extra is not None:
        options["extra_json"] = extra
    return body, options


class _RawCreate:
    def __init__(self, owner: DirectCompletions) -> None:
        self._owner = owner

    def create(self, **params: Any) -> Any:
        if params.get("stream"):
            return self._owner.resource.with_raw_response.create(**params)
        return self._owner.post(params)


class DirectCompletions:
    """``client.chat.completions`` as ``ChatOpenAI`` calls it, without the SDK's transform
    (and over ``line`` when it has one, for requests with no options of their own)."""

    def __init__(self, client: Any, resource: Any, line: DirectLine | None = None) -> None:
        self.client = client  # openai.OpenAI
        self.resource = resource  # its chat.completions, for streams and anything else
        self.line = line

    def post(self, params: Mapping[str, Any]) -> RawAnswer | LineAnswer:
        body, options = _request(params)
        if self.line is not None and set(options) <= _LINE_OPTIONS:
            extra = options.get("extra_json")
            answer = self.line.post({**body, **extra} if extra else body)
            if answer is not None:
                return answer
        response = self.client.post(_PATH, body=body, options=options, cast_to=httpx2.Response)
        return RawAnswer(response)

    def create(self, **params: Any) -> Any:
        if params.get("stream"):
            return self.resource.create(**params)
        return self.post(params).parse()

    @property
    def with_raw_response(self) -> _RawCreate:
        return _RawCreate(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.resource, name)


class _AsyncRawCreate:
    def __init__(self, owner: AsyncDirectCompletions) -> None:
        self._owner = owner

    async def create(self, **params: Any) -> Any:
        if params.get("stream"):
            return await self._owner.resource.with_raw_response.create(**params)
        return await self._owner.post(params)


class AsyncDirectCompletions:
    """The async twin of :class:`DirectCompletions` (``client.chat.completions`` of
    ``openai.AsyncOpenAI``)."""

    def __init__(self, client: Any, resource: Any) -> None:
        self.client = client  # openai.AsyncOpenAI
        self.resource = resource

    async def post(self, params: Mapping[str, Any]) -> RawAnswer:
        body, options = _request(params)
        response = await self.client.post(
            _PATH, body=body, options=options, cast_to=httpx2.Response
        )
        return RawAnswer(response)

    async def create(self, **params: Any) -> Any:
        if params.get("stream"):
            return await self.resource.create(**params)
        return (await self.post(params)).parse()

    @property
    def with_raw_response(self) -> _AsyncRawCreate:
        return _AsyncRawCreate(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.resource, name)


def post_directly(model: ChatOpenAI, *, gate: InFlightGate | None = None) -> ChatOpenAI:
    """``model`` with its completions clients replaced by the direct ones; ``gate`` is the
    in-flight bound its HTTP clients hold, held by its :class:`DirectLine` too."""
    if model.root_client is not None and not isinstance(model.client, DirectCompletions):
        line = direct_line(model.root_client, gate=gate)
        model.client = DirectCompletions(model.root_client, model.client, line)
    if model.root_async_client is not None and not isinstance(
        model.async_client, AsyncDirectCompletions
    ):
        model.async_client = AsyncDirectCompletions(model.root_async_client, model.async_client)
    return model


__all__ = [
    "AsyncDirectCompletions",
    "DirectCompletions",
    "DirectLine",
    "LineAnswer",
    "RawAnswer",
    "direct_line",
    "post_directly",
    "status_error_class",
]
