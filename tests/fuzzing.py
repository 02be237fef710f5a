"""Hypothesis strategies shared by the fuzz tests."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

__all__ = ["mutated"]

KINDS = ("cut", "flip", "splice", "int", "random")


@st.composite
def mutated(
    draw: st.DrawFn, original: bytes, kinds: Sequence[str] = ("cut", "flip", "splice", "int")
) -> bytes:
    """Damaged copies of a real file: cut short, bytes flipped, a run spliced in, an 8-byte
    size or offset field made absurd, or (``"random"``) other bytes altogether."""
    data = bytearray(original)
    kind = draw(st.sampled_from(list(kinds)))
    if kind == "cut":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 20))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "splice":
        a, b = sorted(draw(st.lists(st.integers(0, len(data)), min_size=2, max_size=2)))
        return bytes(data[:a] + draw(st.binary(max_size=64)) + data[b:])
    if kind == "int":
        at = draw(st.integers(0, max(0, len(data) - 8)))
        value = draw(st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1]))
        data[at : at + 8] = value.to_bytes(8, "little")
        return bytes(data)
    return draw(st.binary(max_size=2000))
