"""Conversation and turn ids."""

from __future__ import annotations

import re
import secrets

from tether.errors import TetherError

SERVER_PREFIX = "conv_"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def mint_conversation_id() -> str:
    """A server-minted id: `conv_` + 128 random bits."""
    return SERVER_PREFIX + secrets.token_hex(16)


def mint_turn_id() -> str:
    """`turn_` + 128 random bits: a turn's id is all its URL needs besides the conversation."""
    return "turn_" + secrets.token_hex(16)


def is_server_minted(conversation_id: str) -> bool:
    return conversation_id.startswith(SERVER_PREFIX)


def check_conversation_id(conversation_id: str, param: str) -> str:
    """Raise a 400 unless the id is 1-128 chars of [A-Za-z0-9._:-]."""
    if not _VALID.fullmatch(conversation_id):
        raise TetherError(
            400,
            "invalid_conversation_id",
            "conversation ids are 1-128 characters of A-Z a-z 0-9 . _ : -",
            param=param,
        )
    return conversation_id
