"""Lossless packing of positions and codes, vectorised with numpy.

Positions: Golomb-Rice coded gaps (near the entropy of a random mask; measured 1% above it at 5%
density, while byte varints need zstd afterwards to get as close) or a bitmap when denser; a plain
uint32 list is accepted from simple senders. Codes: MSB-first bit packing at any width 0..16.

Decoders raise ValueError with a short reason; the wire layer turns it into a PayloadError.
"""

from __future__ import annotations

import numpy as np

DENSE, RAW_U32, BITMAP, RICE = 0, 1, 2, 3
MAX_RICE_K = 40
_CHUNK = 1 << 15  # fields per unpacking step (a multiple of 8: chunks stay byte-aligned)


# ---- codes ----------------------------------------------------------------------------------
def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned codes (< 2**bits) MSB-first into ceil(n*bits/8) bytes."""
    n = len(codes)
    if bits == 0 or n == 0:
        return b""
    if bits == 8:
        return codes.astype(np.uint8, copy=False).tobytes()
    if bits == 16:
        return codes.astype(">u2").tobytes()
    if bits in (1, 2, 4):
        per = 8 // bits
        c = codes.astype(np.uint8, copy=False)
        pad = (-n) % per
        if pad:
            c = np.concatenate([c, np.zeros(pad, np.uint8)])
        c = c.reshape(-1, per)
        out = c[:, 0] << np.uint8(8 - bits)
        for j in range(1, per):
            out |= c[:, j] << np.uint8(8 - bits * (j + 1))
        return out.tobytes()
    wide = codes.astype(">u2").view(np.uint8).reshape(n, 2)
    return np.packbits(np.unpackbits(wide, axis=1)[:, 16 - bits :]).tobytes()


def unpack_codes(buf: bytes, n: int, bits: int) -> np.ndarray:
    """Inverse of `pack_codes`; checks the byte length adds up before allocating anything."""
    want = (n * bits + 7) // 8
    if len(buf) != want:
        raise ValueError(f"{len(buf)} bytes for {n} codes of {bits} bits, expected {want}")
    if bits == 0 or n == 0:
        return np.zeros(n, np.uint8)
    raw = np.frombuffer(buf, np.uint8)
    if bits == 8:
        return raw.copy()
    if bits == 16:
        return np.frombuffer(buf, ">u2").astype(np.uint16)
    if bits in (1, 2, 4):
        mask = np.uint8((1 << bits) - 1)
        shifts = np.arange(8 - bits, -1, -bits, dtype=np.uint8)
        out = np.empty(n, np.uint8)
        per = 8 // bits
        for start in range(0, n, _CHUNK):  # chunks keep the (bytes x per) scratch small
            m = min(_CHUNK, n - start)
            chunk = raw[start // per : (start + m + per - 1) // per]
            out[start : start + m] = ((chunk[:, None] >> shifts) & mask).ravel()[:m]
        return out
    return unpack_fixed(raw, n, bits).astype(np.uint16)


def unpack_fixed(raw: np.ndarray, n: int, bits: int) -> np.ndarray:
    """n MSB-first fields of `bits` <= 64 bits each from `raw` (uint8, long enough), as uint64.

    Works in chunks, so scratch memory is a constant (~2 MB) whatever n is: a hostile n can
    only be as large as the already-validated byte length allows.
    """
    width = 16 if bits <= 16 else 64
    out = np.empty(n, np.uint64)
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        a = start * bits // 8
        flat = np.unpackbits(raw[a : a + (m * bits + 7) // 8], count=m * bits).reshape(m, bits)
        wide = np.zeros((m, width), np.uint8)
        wide[:, width - bits :] = flat
        out[start : start + m] = np.packbits(wide, axis=1).view(f">u{width // 8}").ravel()
    return out


# ---- floats ---------------------------------------------------------------------------------
def pack_floats(values: np.ndarray, shuffle: bool) -> bytes:
    v = np.ascontiguousarray(values, dtype="<f4")
    if not shuffle:
        return v.tobytes()
    return v.view(np.uint8).reshape(-1, 4).T.tobytes()


def unpack_floats(buf: bytes, n: int, shuffle: bool) -> np.ndarray:
    if len(buf) != 4 * n:
        raise ValueError(f"{len(buf)} bytes for {n} float32 values, expected {4 * n}")
    if shuffle:  # the transpose copy is also what makes the result writable
        planes = np.frombuffer(buf, np.uint8).reshape(4, n)
        return np.ascontiguousarray(planes.T).view("<f4").reshape(n)
    return np.frombuffer(buf, "<f4").copy()


# ---- positions ------------------------------------------------------------------------------
def _rice_k(gaps: np.ndarray) -> tuple[int, int]:
    """Best Rice parameter near log2(mean gap) and the resulting size in bits."""
    n = len(gaps)
    mean = float(gaps.mean()) if n else 0.0
    centre = int(np.log2(mean * 0.69 + 1.0))
    best = (0, 1 << 62)
    for k in range(max(0, centre - 1), min(MAX_RICE_K, centre + 2) + 1):
        size = n * (1 + k) + int((gaps >> np.uint64(k)).sum())
        if size < best[1]:
            best = (k, size)
    return best


def encode_indices(idx: np.ndarray, numel: int) -> tuple[int, bytes, int]:
    """Pick the smaller of Rice gaps and a bitmap for sorted unique positions: (coding, bytes, k)."""
    gaps = np.diff(idx, prepend=-1).astype(np.uint64) - np.uint64(1)
    k, rice_bits = _rice_k(gaps)
    if numel <= rice_bits:
        mask = np.zeros(numel, np.uint8)
        mask[idx] = 1
        return BITMAP, np.packbits(mask, bitorder="little").tobytes(), 0
    q = (gaps >> np.uint64(k)).astype(np.int64)
    unary = np.ones(int(q.sum()) + len(q), np.uint8)
    unary[np.cumsum(q + 1) - 1] = 0
    pad = (-len(unary)) % 8
    if pad:
        unary = np.concatenate([unary, np.ones(pad, np.uint8)])
    rem = (gaps & np.uint64((1 << k) - 1)) if k else None
    tail = b""
    if rem is not None:
        if k <= 16:
            tail = pack_codes(rem.astype(np.uint16), k)
        else:
            wide = rem.astype(">u8").view(np.uint8).reshape(-1, 8)
            tail = np.packbits(np.unpackbits(wide, axis=1)[:, 64 - k :]).tobytes()
    return RICE, np.packbits(unary).tobytes() + tail, k


def decode_indices(coding: int, buf: bytes, nnz: int, numel: int, k: int) -> np.ndarray:
    """Positions as int64, checked: in range, strictly increasing, lengths consistent."""
    if nnz > numel:
        raise ValueError(f"nnz {nnz} exceeds the {numel} entries of the tensor")
    if coding == RAW_U32:
        if len(buf) != 4 * nnz:
            raise ValueError(f"{len(buf)} bytes for {nnz} uint32 indices, expected {4 * nnz}")
        idx = np.frombuffer(buf, "<u4").astype(np.int64)
        step = np.diff(idx)
        if (step == 0).any():
            raise ValueError(f"duplicate index {int(idx[1:][step == 0][0])}")
        if (step < 0).any():
            raise ValueError("indices are not sorted in increasing order")
    elif coding == BITMAP:
        if len(buf) != (numel + 7) // 8:
            raise ValueError(f"bitmap has {len(buf)} bytes, expected {(numel + 7) // 8}")
        bits = np.unpackbits(np.frombuffer(buf, np.uint8), bitorder="little")
        if bits[numel:].any():
            raise ValueError("bitmap has bits set past the end of the tensor")
        idx = np.flatnonzero(bits[:numel])
        if len(idx) != nnz:
            raise ValueError(f"bitmap marks {len(idx)} entries but nnz is {nnz}")
    elif coding == RICE:
        idx = _decode_rice(buf, nnz, numel, k)
    else:
        raise ValueError(f"unknown index coding {coding}")
    if len(idx) and idx[-1] >= numel:
        raise ValueError(f"index {int(idx[-1])} out of range for {numel} entries")
    return idx


def _decode_rice(buf: bytes, nnz: int, numel: int, k: int) -> np.ndarray:
    """Rice gaps, with every allocation bounded by the validated `nnz` and `numel`.

    The unary part holds nnz stop bits plus sum(gap >> k) <= (numel - nnz) >> k one bits, so a
    longer section is refused before a single bit is unpacked (an all-zero section of a few MB,
    a few hundred bytes once zstd-compressed, used to expand to 64x its size in int64 stops).
    """
    if k > MAX_RICE_K:
        raise ValueError(f"rice_k {k} exceeds {MAX_RICE_K}")
    tail_len = (nnz * k + 7) // 8
    if len(buf) < tail_len:
        raise ValueError(f"{len(buf)} bytes cannot hold {nnz} Rice remainders of {k} bits")
    most = (nnz + ((numel - nnz) >> k) + 7) // 8
    if len(buf) - tail_len > most:
        raise ValueError(f"Rice stream of {len(buf) - tail_len} bytes, more than the {most} that "
                         f"{nnz} gaps within {numel} entries can need (indices out of range)")
    unary = np.unpackbits(np.frombuffer(buf, np.uint8, len(buf) - tail_len))
    zeros = len(unary) - int(np.count_nonzero(unary))
    if zeros != nnz:
        raise ValueError(f"Rice stream holds {zeros} gaps but nnz is {nnz}")
    stops = np.flatnonzero(unary == 0)
    del unary
    used = int(stops[-1]) + 1 if nnz else 0
    if (used + 7) // 8 != (len(buf) - tail_len):
        raise ValueError("Rice stream has trailing bytes")
    q = np.diff(stops, prepend=-1) - 1
    del stops
    if nnz and int(q.max()) > (numel >> k):
        raise ValueError(f"index out of range for {numel} entries")
    gaps = q.astype(np.uint64) << np.uint64(k)
    del q
    if k:
        tail = np.frombuffer(buf, np.uint8, tail_len, len(buf) - tail_len)
        gaps |= unpack_fixed(tail, nnz, k)
    if nnz and int(gaps.max()) >= numel:
        raise ValueError(f"index out of range for {numel} entries")
    return np.cumsum(gaps.astype(np.int64) + 1) - 1
