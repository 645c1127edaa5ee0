"""OpenAI-compatible `POST /v1/embeddings`, so applications that embed for themselves still
use the pinned model: `model` is a catalog key, or `collection:<name>` for that collection's
current read model. `input_type` (`query` | `document`, as several hosted providers accept)
picks the model's query or document prompt. Each embedding says whether its text was cut to the
model's token limit (`truncated`, an extra field OpenAI clients ignore), and the header
`X-Driftgate-Truncated` counts them."""

from __future__ import annotations

import base64
from typing import Literal

from aiohttp import web
from pydantic import Field

from gateway.api.auth import authorize_collection
from gateway.api.keys import COLLECTIONS, EMBEDDINGS, SETTINGS
from gateway.api.requests import StrictBody, check_text, parse_body
from gateway.api.responses import json_response
from gateway.domain.errors import InvalidRequest

routes = web.RouteTableDef()


class EmbeddingsBody(StrictBody):
    model: str = Field(min_length=1, description="a model key, or collection:<name> for its read model")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="one text or a list of texts (token-id arrays are refused: the gateway tokenizes)"
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, description="must equal the model's dimension")
    user: str | None = None
    input_type: Literal["query", "document"] = Field(
        default="document", description="query or document: which of the model's prompts is prepended"
    )


def texts_of(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    """The input's texts; token ids (what LangChain's OpenAIEmbeddings sends by default) are refused."""
    if isinstance(value, str):
        return [value]
    if any(not isinstance(item, str) for item in value):
        raise InvalidRequest(
            "input holds token ids; the gateway accepts text only, since it tokenizes with the pinned model. "
            "Send strings (LangChain's OpenAIEmbeddings: pass check_embedding_ctx_length=False)",
            code="token_ids_not_accepted",
        )
    return [item for item in value if isinstance(item, str)]


@routes.post("/v1/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    app = request.app
    limits = app[SETTINGS].limits
    body = await parse_body(request, EmbeddingsBody)
    texts = texts_of(body.input)
    if not texts:
        raise InvalidRequest("input is empty; send a string or a non-empty list of strings", code="invalid_request")
    if len(texts) > limits.max_batch_documents:
        raise InvalidRequest(
            f"input has {len(texts)} texts, the limit is {limits.max_batch_documents}", code="batch_too_large"
        )
    for index, text in enumerate(texts):
        check_text(text, limits, f"input.{index}" if len(texts) > 1 else "input")
    model = body.model
    if model.startswith("collection:"):
        authorize_collection(request, model.split(":", 1)[1])
        state = await app[COLLECTIONS].state(model.split(":", 1)[1])
        app[COLLECTIONS].refuse_drifted(state, [state.read_model])
        model = state.read_model
    spec = app[EMBEDDINGS].spec(model)
    if body.dimensions is not None and body.dimensions != spec.dim:
        raise InvalidRequest(
            f"model {model!r} has {spec.dim} dimensions; it cannot produce {body.dimensions}", code="invalid_dimensions"
        )
    encoded = await app[EMBEDDINGS].embed(model, texts, body.input_type)
    data = []
    truncated = encoded.truncated or (False,) * len(texts)
    for index, vector in enumerate(encoded.vectors):
        if body.encoding_format == "base64":
            value: object = base64.b64encode(vector.astype("<f4").tobytes()).decode()
        else:
            value = [float(x) for x in vector]
        data.append({"object": "embedding", "index": index, "embedding": value, "truncated": truncated[index]})
    tokens = sum(encoded.tokens)
    return json_response(
        {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
        headers={"X-Driftgate-Model": model, "X-Driftgate-Truncated": str(sum(truncated))},
    )
