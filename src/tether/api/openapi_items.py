"""The OpenAPI operations of OpenAI's Conversations API on Tether's conversations (create with
items, update by POST, the items routes): api/conversation_items.py."""

from __future__ import annotations

from tether.api.openapi_paths import Answer, Operation

_BAD_ID = "Invalid conversation id (invalid_conversation_id)."
_NOT_FOUND = "Unknown conversation, or another tenant's (conversation_not_found)."
_ITEM = "No such item in it, or one removed (item_not_found)."
_STORAGE = "The database is unavailable or read-only (storage_unavailable)."
_BODY = {
    413: "The body is too large (request_too_large), or too many items (too_many_messages).",
    415: "The body is not application/json (unsupported_media_type).",
}
_ITEMS_400 = "Invalid fields or items (invalid_request, invalid_json)."
_ITEMS_422 = "The items break the tool-call sequence rules (invalid_message_sequence)."
_VERSIONED = ("X-Tether-Conversation", "ETag")
_DETAIL = Answer(description="The conversation.", schema="ConversationDetail", headers=_VERSIONED)
_LIST = Answer(description="A page of items.", schema="ResponseItemList")
_ONE = ("ConversationId", "ItemId")

ITEM_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="post",
        path="/v1/conversations",
        id="createConversation",
        tag="conversations",
        summary="Create a conversation, with its first items (OpenAI's Conversations API)",
        description="The items are stored without running the model; `metadata` is at most "
        "16 string pairs. The answer is the conversation (OpenAI's fields and Tether's).",
        request="ConversationCreate",
        example={"items": [{"role": "user", "content": "Hello!"}], "metadata": {"k": "v"}},
        answers=(
            Answer(
                description="The conversation.",
                schema="ConversationDetail",
                headers=_VERSIONED,
                links="conversation",
            ),
        ),
        errors={400: _ITEMS_400, 422: _ITEMS_422, **_BODY, 503: _STORAGE},
    ),
    Operation(
        method="post",
        path="/v1/conversations/{conversation_id}",
        id="updateConversationByPost",
        tag="conversations",
        summary="Replace the metadata (OpenAI's update; the same as PATCH)",
        parameters=("ConversationId", "IfMatch"),
        request="ConversationPatch",
        example={"metadata": {"topic": "billing"}},
        answers=(_DETAIL,),
        errors={
            400: "Invalid fields (invalid_request, invalid_json); " + _BAD_ID,
            404: _NOT_FOUND,
            412: "If-Match names another transcript version (precondition_failed).",
            **_BODY,
            503: _STORAGE,
        },
    ),
    Operation(
        method="get",
        path="/v1/conversations/{conversation_id}/items",
        id="listConversationItems",
        tag="conversations",
        summary="The conversation's items, newest first (order=asc: oldest first)",
        description="A message is one item; an assistant message's tool calls are "
        "function_call items after it, a tool result a function_call_output. Items removed "
        "from the model's view are left out.",
        parameters=("ConversationId", "ListLimit", "ItemsOrder", "ItemsAfter"),
        answers=(_LIST,),
        errors={
            400: "A bad limit or order (invalid_request); " + _BAD_ID,
            404: _NOT_FOUND[:-1] + "; or `after` names no item (item_not_found).",
            503: _STORAGE,
        },
    ),
    Operation(
        method="post",
        path="/v1/conversations/{conversation_id}/items",
        id="addConversationItems",
        tag="conversations",
        summary="Add items at the end without running the model (Idempotency-Key honoured)",
        parameters=("ConversationId",),
        request="ItemsCreate",
        example={"items": [{"role": "user", "content": "a note"}]},
        answers=(Answer(description="The items added.", schema="ResponseItemList"),),
        errors={
            400: _ITEMS_400[:-1] + "; " + _BAD_ID,
            404: _NOT_FOUND,
            422: _ITEMS_422,
            **_BODY,
            503: _STORAGE,
        },
    ),
    Operation(
        method="get",
        path="/v1/conversations/{conversation_id}/items/{item_id}",
        id="getConversationItem",
        tag="conversations",
        summary="One item",
        parameters=_ONE,
        answers=(Answer(description="The item.", schema="ConversationItem"),),
        errors={400: _BAD_ID, 404: _NOT_FOUND[:-1] + "; " + _ITEM, 503: _STORAGE},
    ),
    Operation(
        method="delete",
        path="/v1/conversations/{conversation_id}/items/{item_id}",
        id="deleteConversationItem",
        tag="conversations",
        summary="Remove an item from the model's view (the transcript keeps it, marked)",
        description="A tool call and its results leave together. The seqs stay as they are.",
        parameters=_ONE,
        answers=(_DETAIL,),
        errors={400: _BAD_ID, 404: _NOT_FOUND[:-1] + "; " + _ITEM, 503: _STORAGE},
    ),
)
