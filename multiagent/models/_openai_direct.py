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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx2
from langchain_openai import ChatOpenAI

_PATH = "/chat/completions"
#: ``create`` keywords that are request options, not body fields (``make_request_options``)
_OPTIONS = {"extra_headers": "headers", "extra_query": "params", "timeout": "timeout"}


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
    """``client.chat.completions`` as ``ChatOpenAI`` calls it, without the SDK's transform."""

    def __init__(self, client: Any, resource: Any) -> None:
        self.client = client  # openai.OpenAI
        self.resource = resource  # its chat.completions, for streams and anything else

    def post(self, params: Mapping[str, Any]) -> RawAnswer:
        body, options = _request(params)
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


def post_directly(model: ChatOpenAI) -> ChatOpenAI:
    """``model`` with its completions clients replaced by the direct ones."""
    if model.root_client is not None and not isinstance(model.client, DirectCompletions):
        model.client = DirectCompletions(model.root_client, model.client)
    if model.root_async_client is not None and not isinstance(
        model.async_client, AsyncDirectCompletions
    ):
        model.async_client = AsyncDirectCompletions(model.root_async_client, model.async_client)
    return model


__all__ = ["AsyncDirectCompletions", "DirectCompletions", "RawAnswer", "post_directly"]
