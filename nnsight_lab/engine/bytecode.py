"""What the caller does next with a value, read from its bytecode.

A trace body gets real values, not proxies, so the engine cannot see what the
body does with one. Where a message depends on it (`block.output[0]`, or the
shape of the names after `with ... as`), the instructions that follow the one a
frame is executing tell: `following(frame, 2)` right after a read of `.output`
in `h.output[0]` is `LOAD_CONST 0`, `BINARY_SUBSCR`. Decoded instructions are
kept per code object, so each call site is decoded once.
"""

from __future__ import annotations

import dis
from types import CodeType, FrameType

_SKIPPED = frozenset(("CACHE", "NOP", "RESUME", "EXTENDED_ARG"))
_decoded: dict[CodeType, list[dis.Instruction]] = {}


def following(frame: FrameType, count: int) -> list[dis.Instruction]:
    """Up to `count` instructions after the one `frame` executes now (no-ops left out)."""
    code = frame.f_code
    instructions = _decoded.get(code)
    if instructions is None:
        if len(_decoded) > 4096:
            _decoded.clear()
        instructions = _decoded[code] = [
            i for i in dis.get_instructions(code) if i.opname not in _SKIPPED
        ]
    offset = frame.f_lasti
    after = [i for i in instructions if i.offset > offset]
    return after[:count]


def unpacks_into(frame: FrameType) -> int:
    """How many names the next instruction unpacks a value into (0: it does not)."""
    after = following(frame, 1)
    return after[0].arg or 0 if after and after[0].opname == "UNPACK_SEQUENCE" else 0
