"""The OpenAPI operations of the Responses API: create (JSON, SSE), read (and resume its
stream), input items, cancel, compact."""

from __future__ import annotations

from tether.api.openapi_paths import Answer, Operation

_STORAGE = "The database is unavailable or read-only (storage_unavailable)."

RESPONSE_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="post",
        path="/v1/responses",
        id="createResponse",
        tag="responses",
        summary="The Responses API on Tether's conversations",
        description="`input` (a string or items), `previous_response_id` (at the "
        "conversation's head it continues it; an older one forks there) or `conversation`; "
        "`stream: true` answers the spec's events with sequence numbers. Client function "
        "tools' calls are returned, never run. `store: false` is not supported yet (400).",
        parameters=("IdempotencyKey",),
        request="CreateResponse",
        example={"model": "gpt-4o-mini", "input": "Hello!"},
        answers=(
            Answer(
                description="The response (JSON, or its event stream with stream=true).",
                schema="ResponseObject",
                headers=("X-Tether-Turn",),  # X-Tether-Conversation too, unless store: false
                sse=True,
                sse_schema="ResponseEvent",
            ),
        ),
        errors={
            400: "Invalid fields or input items (invalid_request, invalid_json), "
            "model_required; store: false from an older response (it would fork).",
            404: "previous_response_id names no response of the tenant "
            "(previous_response_not_found), "
            "or conversation names a server-minted id that does not exist "
            "(conversation_not_found); a model the upstream does not serve (model_not_found).",
            409: "Another turn of the conversation is running (conversation_busy).",
            413: "The body is too large (request_too_large).",
            415: "The body is not application/json (unsupported_media_type).",
            422: "The input breaks the tool-call sequence rules (invalid_message_sequence).",
            502: "The upstream failed.",
            503: "No upstream, shutting down, or " + _STORAGE,
            504: "The upstream timed out.",
        },
    ),
    Operation(
        method="get",
        path="/v1/responses/{response_id}",
        id="getResponse",
        tag="responses",
        summary="A stored response, rebuilt from its turn (stream=true: its events again)",
        description="With stream=true, the stream's events after starting_after (a "
        "sequence_number) or Last-Event-ID, then live ones while it runs.",
        parameters=("ResponseId", "ResponseStream", "StartingAfter"),
        answers=(
            Answer(
                description="The response (or, with stream=true, its events).",
                schema="ResponseObject",
                sse=True,
                sse_schema="ResponseEvent",
            ),
        ),
        errors={
            400: "A bad starting_after or Last-Event-ID (invalid_request).",
            404: "No such response of the tenant (response_not_found).",
            410: "Its events are no longer buffered, or it was not streamed (events_expired).",
            503: _STORAGE,
        },
    ),
    Operation(
        method="get",
        path="/v1/responses/{response_id}/input_items",
        id="listResponseInputItems",
        tag="responses",
        summary="What a response's turn stored besides its reply: its input, as items",
        parameters=("ResponseId", "ListLimit", "ItemsOrder", "ItemsAfter"),
        answers=(Answer(description="A page of items.", schema="ResponseItemList"),),
        errors={
            400: "A bad limit (invalid_request).",
            404: "No such response of the tenant (response_not_found).",
            503: _STORAGE,
        },
    ),
    Operation(
        method="post",
        path="/v1/responses/{response_id}/cancel",
        id="cancelResponse",
        tag="responses",
        summary="Stop a running response (nothing of it is stored)",
        description="A response that already ended is left as it ended; either way the answer "
        "is the response as it is then (status cancelled when this stopped it).",
        parameters=("ResponseId",),
        answers=(Answer(description="The response.", schema="ResponseObject"),),
        errors={404: "No such response of the tenant (response_not_found).", 503: _STORAGE},
    ),
    Operation(
        method="delete",
        path="/v1/responses/{response_id}",
        id="deleteResponse",
        tag="responses",
        summary="Delete a response (its conversation keeps its messages)",
        description="From then on the response is unknown: GET, input_items and "
        "previous_response_id answer 404. A running one is stopped first.",
        parameters=("ResponseId",),
        answers=(Answer(description="Deleted.", schema="ResponseDeleted"),),
        errors={404: "No such response of the tenant (response_not_found).", 503: _STORAGE},
    ),
    Operation(
        method="post",
        path="/v1/responses/compact",
        id="compactResponse",
        tag="responses",
        summary="Compact a conversation (or bare input) into a compaction item",
        description="With previous_response_id or conversation: a Tether checkpoint of that "
        "stored conversation (input, if given, appended first); the output is the user "
        "messages the model still sees verbatim, then a `compaction` item naming it. With only "
        "input: nothing is stored; the item carries the summary. Given back as input to POST "
        "/v1/responses, either continues from the summary. encrypted_content is an opaque "
        "token, not encrypted (Tether holds the state).",
        request="CompactRequest",
        example={"model": "gpt-4o-mini", "input": "Hello!"},
        answers=(Answer(description="The compacted response.", schema="CompactedResponse"),),
        errors={
            400: "No model (model_required), invalid fields or input (invalid_request).",
            404: "previous_response_id or conversation names nothing of the tenant "
            "(previous_response_not_found, conversation_not_found).",
            413: "The body is too large (request_too_large).",
            415: "The body is not application/json (unsupported_media_type).",
            502: "The summariser failed (compaction_failed).",
            503: "No upstream (upstream_not_configured), or " + _STORAGE,
        },
    ),
)
