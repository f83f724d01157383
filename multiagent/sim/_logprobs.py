"""Token log probabilities for ``logprobs: true``: OpenAI's shape, drawn deterministically.

Clients that ask for them read ``choices[i].logprobs.content`` (evaluation code, confidence
scores, LangChain's ``response_metadata["logprobs"]``) and fail on the ``null`` a server that
ignores the flag sends. Each token's figures depend only on the answer's text and its place
in it, so a reply and its stream carry the same ones.
"""

from __future__ import annotations

import random
from typing import Any

from multiagent.sim.text import digest


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def token_logprobs(pieces: list[str], *, top: int) -> list[dict[str, Any]]:
    """One ``{"token", "logprob", "bytes", "top_logprobs"}`` per piece, ``top`` alternatives each.

    Args:
        pieces: The answer's streaming pieces (its tokens here).
        top: How many ``top_logprobs`` each token lists (0 to 20); the token itself comes first.
    """
    rng = random.Random(digest("logprobs", pieces))
    distinct = list(dict.fromkeys(pieces))
    content = []
    for piece in pieces:
        logprob = -round(rng.random() * 1.5, 4)
        others = rng.sample(distinct, min(len(distinct), top))
        alternatives = [_entry(piece, logprob)]
        for rank, other in enumerate((o for o in others if o != piece), start=1):
            alternatives.append(_entry(other, round(logprob - rank - rng.random(), 4)))
        content.append({**_entry(piece, logprob), "top_logprobs": alternatives[:top]})
    return content
