"""The one msgpack + pydantic codec, and the convention for error replies (a header marks them)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, ValidationError

from fluster.errors import ProtocolError

M = TypeVar("M", bound=BaseModel)

ERROR_HEADER = "Fluster-Error"
ERROR_HEADERS = {ERROR_HEADER: "1"}


def encode(message: BaseModel) -> bytes:
    data: bytes = msgpack.packb(message.model_dump(mode="python"), use_bin_type=True)
    return data


def decode(data: bytes, model: type[M]) -> M:
    """Decode ``data`` as ``model``.

    Raises:
        ProtocolError: the bytes are not msgpack, or not a valid ``model``.
    """
    try:
        raw: Any = msgpack.unpackb(data, raw=False)
        return model.model_validate(raw)
    except (
        ValueError,
        TypeError,
        ValidationError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise ProtocolError(f"cannot decode {model.__name__}: {exc}") from exc


def is_error_reply(headers: dict[str, str] | None) -> bool:
    return bool(headers) and (headers or {}).get(ERROR_HEADER) == "1"
