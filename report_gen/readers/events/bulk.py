"""The bulk scalar fast path: records of torch's plain ``add_scalar`` shape decoded with numpy.

Speed
    Files are streamed in chunks. Records of the common legacy scalar shape (one ``simple_value`` per
    event, as torch's ``add_scalar`` writes) are decoded in bulk with numpy straight from the chunk;
    everything else goes through ``event_pb2.Event.FromString``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from report_gen.readers.tfrecord import gather_rows


@dataclass
class SimpleScalars:
    """Records of the exact legacy single-``simple_value`` shape, decoded with numpy.

    Wire layout (proto3 field order):
    ``09 <wall f64> [10 <step varint>] 2a L1 0a L2 0a T <tag> 15 <value f32>`` with one-byte L1, L2, T.
    ``mask`` marks which records of the batch matched; the other arrays hold the matched ones.
    """

    mask: np.ndarray
    tags: np.ndarray  # object array of str
    steps: np.ndarray
    wall_times: np.ndarray
    values: np.ndarray

    @classmethod
    def decode(cls, buffer: bytes, starts: np.ndarray, lengths: np.ndarray) -> "SimpleScalars":
        raw = np.frombuffer(buffer, dtype=np.uint8)
        last = raw.size - 1

        def at(index: np.ndarray) -> np.ndarray:
            return raw[np.minimum(index, last)].astype(np.int64)

        ends = starts + lengths
        has_step = at(starts + 9) == 0x10
        varint = raw[np.minimum(starts[:, None] + 10 + np.arange(10), last)]
        done = varint < 0x80
        step_len = np.where(has_step, done.argmax(axis=1) + 1, 0)
        p = starts + 9 + np.where(has_step, 1 + step_len, 0)  # at the summary field
        tag_len = at(p + 5)
        mask = ((lengths >= 21) & (at(starts) == 0x09) & (~has_step | done.any(axis=1))
                & (at(p) == 0x2A) & (at(p + 2) == 0x0A) & (at(p + 4) == 0x0A)
                & (at(p + 1) < 0x80) & (at(p + 1) == at(p + 3) + 2) & (at(p + 3) == tag_len + 7)
                & (at(p + 6 + tag_len) == 0x15) & (p + 11 + tag_len == ends))
        sel = np.flatnonzero(mask)
        starts, p, tag_len = starts[sel], p[sel], tag_len[sel]
        return cls(
            mask=mask,
            tags=_tags(buffer, (p + 6).tolist(), tag_len.tolist()),
            steps=_varints(varint[sel], step_len[sel]),
            wall_times=gather_rows(raw, starts + 1, 8).view("<f8").ravel(),
            values=gather_rows(raw, p + 7 + tag_len, 4).view("<f4").ravel().astype(np.float64),
        )


def _varints(groups: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Decode int64 varints from rows of up to 10 bytes; length 0 means the field was absent (0)."""
    payload = (groups.astype(np.uint64) & np.uint64(0x7F)) << (np.uint64(7) * np.arange(10, dtype=np.uint64))
    payload[np.arange(10) >= lengths[:, None]] = 0
    return payload.sum(axis=1, dtype=np.uint64).view(np.int64)


def _tags(buffer: bytes, starts: list[int], lengths: list[int]) -> np.ndarray:
    """Tag strings (decoded once per distinct byte string) as an object array."""
    names: dict[bytes, str] = {}
    raw = [buffer[s:s + n] for s, n in zip(starts, lengths)]
    for key in set(raw):
        names[key] = key.decode("utf-8", "replace")
    return np.array([names[r] for r in raw], dtype=object)
