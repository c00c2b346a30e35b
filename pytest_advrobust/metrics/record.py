"""The per-sample record of one evaluation: which samples, and each one's two verdicts.

A baseline entry and a JSON report carry, for the samples a robust test evaluated
(at its headline eps), each sample's identity and whether the model got it right
without the attack (``clean``) and under it (``robust``), compactly::

    "samples": {
      "format": 1,
      "n": 512,
      "id": "sha256-64",        # how an id is made (see below)
      "ids": "<base64>",        # n ids of 8 bytes each, in evaluation order
      "index": "<base64>",      # n positions in the data fixture, uint32 little-endian
      "clean": "<base64>",      # n bits, most significant bit first (numpy's packbits)
      "robust": "<base64>"      # n bits, likewise
    }

A sample's id is the first 8 bytes of the SHA-256 of its label and its input
(dtype, shape and raw bytes), so a sample keeps its id wherever it sits in the
data set and an edited sample gets a new one. ``index`` is the sample's position
in the data fixture as the plugin reads it: what a reviewer looks up.

This module does not import torch: the ``advrobust compare`` command reads
records from JSON files. The ids are computed where the tensors are
(:meth:`~pytest_advrobust.evaluation.outcome.Outcome.sample_record`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence

__all__ = ["RECORD_FORMAT", "ID_BYTES", "SampleRecord", "decode", "encode", "short_id"]

#: Version of the record layout above.
RECORD_FORMAT = 1
#: Bytes of a sample id (64 bits: no collision to fear below billions of samples).
ID_BYTES = 8
#: What the ``id`` field says about how ids are made.
ID_KIND = "sha256-64"


@dataclass(frozen=True)
class SampleRecord:
    """One evaluation's samples, in evaluation order: ``ids`` (hex strings of
    :data:`ID_BYTES` bytes), ``index`` (positions in the data fixture), ``clean`` and
    ``robust`` (right without and with the attack)."""

    ids: List[str]
    index: List[int]
    clean: List[bool]
    robust: List[bool]

    def __len__(self) -> int:
        return len(self.ids)


def short_id(sample_id: str) -> str:
    """The first 8 hex digits of an id: what messages show."""
    return sample_id[:8]


def _pack_bits(bits: Sequence[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def _unpack_bits(data: bytes, n: int) -> List[bool]:
    return [bool(data[i >> 3] & (0x80 >> (i & 7))) for i in range(n)]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode(record: SampleRecord) -> dict:
    """The JSON form of ``record`` (see the module docstring)."""
    n = len(record)
    if not (len(record.index) == len(record.clean) == len(record.robust) == n):
        raise ValueError("a sample record needs one index, clean and robust verdict per id")
    return {
        "format": RECORD_FORMAT,
        "n": n,
        "id": ID_KIND,
        "ids": _b64(b"".join(bytes.fromhex(i) for i in record.ids)),
        "index": _b64(b"".join(int(i).to_bytes(4, "little") for i in record.index)),
        "clean": _b64(_pack_bits(record.clean)),
        "robust": _b64(_pack_bits(record.robust)),
    }


def _field(doc: Mapping[str, Any], name: str, size: int) -> bytes:
    try:
        data = base64.b64decode(str(doc[name]), validate=True)
    except (KeyError, binascii.Error, ValueError):
        raise ValueError(f"its '{name}' field is missing or not base64") from None
    if len(data) != size:
        raise ValueError(f"its '{name}' field holds {len(data)} bytes where {size} are due")
    return data


def decode(doc: Any) -> Optional[SampleRecord]:
    """The record of a JSON ``samples`` field; ``None`` for a missing one (``None``).

    Raises :class:`ValueError` with a clause that completes "the per-sample record
    ... is unusable: ..." for a record of another format or with damaged fields.
    """
    if doc is None:
        return None
    if not isinstance(doc, Mapping):
        raise ValueError("it is not an object")
    if doc.get("format") != RECORD_FORMAT or doc.get("id") != ID_KIND:
        raise ValueError(
            f"it has format {doc.get('format')!r} / ids {doc.get('id')!r}, and this version "
            f"reads format {RECORD_FORMAT} with {ID_KIND} ids"
        )
    n = doc.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError("its 'n' field is not a sample count")
    raw_ids = _field(doc, "ids", n * ID_BYTES)
    raw_index = _field(doc, "index", n * 4)
    nbits = (n + 7) // 8
    return SampleRecord(
        ids=[raw_ids[i : i + ID_BYTES].hex() for i in range(0, n * ID_BYTES, ID_BYTES)],
        index=[int.from_bytes(raw_index[i : i + 4], "little") for i in range(0, n * 4, 4)],
        clean=_unpack_bits(_field(doc, "clean", nbits), n),
        robust=_unpack_bits(_field(doc, "robust", nbits), n),
    )
