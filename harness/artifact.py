"""The artifact: quantize (a codec) -> safetensors container -> compress (a compressor), and its size rule.

Cap: 16,000,000 bytes (decimal) = code bytes (raw UTF-8 source of the backend's model files) + the
compressed model bytes. Loading never executes anything: the container is parsed by hand, every declared
size is checked against the bytes actually present before anything is allocated, and decompression stops
at a fixed bound, so a hostile file can only be refused.

Codecs (``CODECS``, chosen with `golf run --codec`): ``int8_per_row`` (the default; artifacts that say ``int8``, the
name before the registry, are read as it) is parameter-golf's `int8_clean_per_row_v1`: 2-D float tensors with more than 65,536 elements
become per-row int8 (clip at the 99.99984th percentile of |w| per row, scale = max(clip/127, 1/127) in fp16);
smaller tensors are kept as fp16, or fp32 for the spec's declared control tensors; other large float tensors
get per-tensor int8 with an fp32 scale. ``int6_per_row`` rounds the same 2-D tensors to [-31, 31] with a per-row
scale and bit-packs 4 values into 3 bytes; ``gptq_int6`` chooses those int6 values with GPTQ (Frantar et al. 2022,
Algorithm 1) from per-layer input Hessians collected on training data, falling back to rounding for a weight with no
Hessian. Everything else follows int8_per_row's rule.

Compressors (``COMPRESSORS``, `golf run --compressor`): ``zstd-22`` (the default; a zstd frame, told by its magic
``28 b5 2f fd``), ``lzma`` (xz container, preset 9, magic ``fd 37 7a 58 5a 00``) and ``brotli`` (quality 11; brotli has
no magic, so golfbench writes the 4-byte header ``GBr1`` before the stream). Every decompressor is fed in bounded
pieces and stops past MAX_DECOMPRESSED.
"""

from __future__ import annotations

import io
import json
import lzma
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from golfbench.harness.code import code_bytes, code_digest  # noqa: F401 - re-exported: the size rule's inputs
from golfbench.harness.errors import GolfError

CAP_BYTES = 16_000_000
KEEP_FLOAT_MAX_NUMEL = 65_536
CLIP_Q = 0.9999984
ZSTD_LEVEL = 22
FORMAT = "golfbench-artifact-v1"
# A 16 MB artifact of int8 weights cannot legitimately inflate past this; anything more is a bomb.
MAX_DECOMPRESSED = 256 * 1024 * 1024
MAX_HEADER = 16 * 1024 * 1024
DEFAULT_CODEC_NAME = "int8_per_row"

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
BROTLI_HEADER = b"GBr1"  # golfbench's own: a brotli stream has no magic of its own
LZMA_PRESET = 9
BROTLI_QUALITY = 11
_DTYPES = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "U8": np.uint8}
_SCALE = ".__scale"


class CorruptArtifact(GolfError):
    """A damaged or hostile container: refused, with what to do."""

    def __init__(self, what: str) -> None:
        super().__init__(f"artifact is corrupt: {what}; re-create it with `golf run` or re-download it")


@dataclass
class TensorEntry:
    """One row of `golf artifact inspect`: a tensor's ``name``, its original ``shape``, its ``codec`` (int8_row,
    int8_tensor, int6_row, int6_gptq, fp16 or fp32) and ``stored_bytes``, the bytes it takes in the container before compression
    (int8 values plus its scale, if any).
    """

    name: str
    shape: tuple[int, ...]
    codec: str  # int8_row | int8_tensor | int6_row | int6_gptq | fp16 | fp32
    stored_bytes: int


FP16_MAX = float(np.finfo(np.float16).max)  # 65,504: past it a value stored as fp16 becomes inf


def _fits_fp16(a: np.ndarray) -> bool:
    return not a.size or float(np.max(np.abs(a))) <= FP16_MAX


def _quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row int8 of a 2-D fp32 tensor: (int8 (rows, cols), scale (rows,)). The scale is fp16 as in
    parameter-golf, or fp32 when a row's scale would overflow fp16 (|w| past ~8.3e6); never an inf."""
    clip = np.quantile(np.abs(w), CLIP_Q, axis=1).astype(np.float32)
    clipped = np.clip(w, -clip[:, None], clip[:, None])
    scale = np.maximum(clip / 127.0, 1.0 / 127.0).astype(np.float32)
    q = np.clip(np.round(clipped / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float16) if _fits_fp16(scale) else scale


def _quantize_tensor(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    clip = float(np.quantile(np.abs(w).ravel(), CLIP_Q)) if w.size else 0.0
    scale = np.float32(clip / 127.0 if clip > 0 else 1.0)
    q = np.clip(np.round(np.clip(w, -clip, clip) / scale), -127, 127).astype(np.int8)
    return q, np.array(scale, dtype=np.float32)


def quantize(
    weights: dict[str, np.ndarray],
    is_control: Callable[[str], bool],
    matrix: Callable[[str, np.ndarray], tuple[str, dict, dict]] | None = None,
) -> tuple[dict, dict]:
    """Return (stored tensors, per-tensor codec table) for codec `int8_per_row` (or, with ``matrix``, another codec
    that shares its rule for small and non-2-D tensors).

    weights: {name: float array}. A small tensor that parameter-golf would keep in fp16 but whose values
    overflow fp16 is kept in fp32 instead, and its table entry says so (``"fp16_overflow": true``); so is a
    per-row scale that would overflow fp16 (``"scale": "fp32"``). ``matrix(name, w)`` -> (codec, stored tensors,
    extra table fields) replaces per-row int8 for the 2-D tensors past KEEP_FLOAT_MAX_NUMEL. Raises GolfError for a
    reserved name or a NaN/inf weight (the model diverged: there is nothing meaningful to store).
    """
    stored: dict[str, np.ndarray] = {}
    table: dict[str, dict] = {}
    for name in sorted(weights):
        w = np.asarray(weights[name], dtype=np.float32)
        if name.endswith(_SCALE):
            raise GolfError(f"tensor name '{name}' uses the reserved suffix '{_SCALE}'")
        if w.size and not np.isfinite(w).all():
            raise GolfError(f"weight tensor '{name}' holds NaN or inf values: the model diverged; nothing to pack")
        entry: dict = {"shape": list(w.shape)}
        if w.size <= KEEP_FLOAT_MAX_NUMEL:
            codec = "fp32" if is_control(name) else "fp16"
            if codec == "fp16" and not _fits_fp16(w):
                codec, entry["fp16_overflow"] = "fp32", True
            stored[name] = w.astype(np.float32 if codec == "fp32" else np.float16)
        elif w.ndim == 2 and matrix is not None:
            codec, tensors, extra = matrix(name, w)
            stored.update(tensors)
            entry.update(extra)
        elif w.ndim == 2:
            codec = "int8_row"
            stored[name], stored[name + _SCALE] = _quantize_rows(w)
            if stored[name + _SCALE].dtype == np.float32:
                entry["scale"] = "fp32"
        else:
            codec = "int8_tensor"
            stored[name], stored[name + _SCALE] = _quantize_tensor(w)
        table[name] = {"codec": codec, **entry}
    return stored, table


# ----------------------------------------------------------------------------------------------------------
# int6: per-row scales, values in [-31, 31], 4 values bit-packed into 3 bytes

INT6_MAX = 31
FP16_MIN_NORMAL = float(np.finfo(np.float16).tiny)  # 2**-14: the smallest per-row int6 scale (no fp16 subnormals)


def int6_scales(w: np.ndarray) -> np.ndarray:
    """Per-row int6 scales of a 2-D fp32 tensor ``w`` (rows, cols): clip at the CLIP_Q quantile of |w| per row (as
    int8_per_row), scale = max(clip / 31, 2**-14), rounded to fp16 (fp32 where a scale overflows fp16). The values
    are quantized against exactly these (stored) scales. Returns float16 or float32 (rows,)."""
    clip = np.quantile(np.abs(w), CLIP_Q, axis=1).astype(np.float32)
    scale = np.maximum(clip / INT6_MAX, FP16_MIN_NORMAL).astype(np.float32)
    return scale.astype(np.float16) if _fits_fp16(scale) else scale


def pack_int6(q: np.ndarray) -> np.ndarray:
    """Bit-pack int values in [-31, 31] (any shape, row-major) into uint8 (3 * ceil(n / 4),): each value is stored as
    the 6-bit code q + 32 (so 0 is never a valid code), 4 codes a, b, c, d as the 24 bits a | b << 6 | c << 12 | d << 18,
    little-endian. Padding codes are 32 (the value 0). Raises ValueError for a value outside [-31, 31]."""
    flat = np.asarray(q).ravel().astype(np.int32)
    if flat.size and (flat.min() < -INT6_MAX or flat.max() > INT6_MAX):
        raise ValueError("int6 values must lie in [-31, 31]")
    codes = np.full(-(-flat.size // 4) * 4, 32, dtype=np.uint32)
    codes[: flat.size] = flat + 32
    c = codes.reshape(-1, 4)
    word = c[:, 0] | (c[:, 1] << 6) | (c[:, 2] << 12) | (c[:, 3] << 18)
    return np.stack([word & 0xFF, (word >> 8) & 0xFF, (word >> 16) & 0xFF], axis=1).astype(np.uint8).ravel()


def unpack_int6(packed: np.ndarray, n: int) -> np.ndarray:
    """The inverse of ``pack_int6``: uint8 (3 * ceil(n / 4),) -> int8 (n,) in [-31, 31]. Raises CorruptArtifact for a
    wrong length, a code 0 (no value maps to it) or non-zero padding."""
    if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != 3 * (-(-n // 4)):
        raise CorruptArtifact(f"an int6 tensor holds {packed.size} bytes, {3 * (-(-n // 4))} expected for {n} values")
    b = packed.reshape(-1, 3).astype(np.uint32)
    word = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    codes = np.stack([(word >> s) & 63 for s in (0, 6, 12, 18)], axis=1).ravel()
    if codes.size and codes.min() == 0:
        raise CorruptArtifact("an int6 tensor holds the code 0, which no value maps to")
    if np.any(codes[n:] != 32):
        raise CorruptArtifact("an int6 tensor has non-zero padding")
    return (codes[:n].astype(np.int16) - 32).astype(np.int8)


def _int6_round(name: str, w: np.ndarray) -> tuple[str, dict, dict]:
    scale = int6_scales(w)
    q = np.clip(np.round(w / scale.astype(np.float32)[:, None]), -INT6_MAX, INT6_MAX)
    return (
        "int6_row",
        {name: pack_int6(q), name + _SCALE: scale},
        {"scale": "fp32"} if scale.dtype == np.float32 else {},
    )


def gptq(w: np.ndarray, hessian: np.ndarray, scale: np.ndarray, damp: float = 0.01, block: int = 128) -> np.ndarray:
    """GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
    Transformers", Algorithm 1; as in the authors' gptq.py): quantize ``w`` (rows, cols) column by column onto the
    int6 grid ``scale`` (rows,) and spread each column's error over the columns not yet quantized through the upper
    Cholesky factor of H⁻¹, so the layer output X Wᵀ moves as little as it can. ``hessian``: float64 (cols, cols),
    Σ x xᵀ over calibration inputs x; dead inputs (zero diagonal) get a unit diagonal and zero weight; damping
    ``damp`` × mean(diag H) is added to the diagonal (1 % as in the paper). No act-order. Returns int8 (rows, cols)
    in [-31, 31]. Raises GolfError when H is not (cols, cols), not finite or not positive definite after damping.
    """
    W = np.array(w, dtype=np.float64)
    rows, cols = W.shape
    H = np.array(hessian, dtype=np.float64)
    if H.shape != (cols, cols) or not np.isfinite(H).all():
        raise GolfError(f"GPTQ needs a finite ({cols}, {cols}) Hessian, got {H.shape}")
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H[np.diag_indices(cols)] += damp * float(np.mean(np.diag(H)))
    try:
        Hinv = np.linalg.cholesky(np.linalg.inv(H)).T  # upper factor U with H⁻¹ = Uᵀ U
    except np.linalg.LinAlgError:
        raise GolfError("GPTQ: the damped Hessian is not positive definite") from None
    s = np.asarray(scale, dtype=np.float64)
    Q = np.zeros((rows, cols), dtype=np.int8)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = W1[:, i]
            q = np.clip(np.round(col / s), -INT6_MAX, INT6_MAX)
            Q[:, i1 + i] = q
            err = (col - q * s) / Hinv1[i, i]
            W1[:, i:] -= np.outer(err, Hinv1[i, i:])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q


def quantize_int6(
    weights: dict[str, np.ndarray], is_control: Callable[[str], bool], hessians=None
) -> tuple[dict, dict]:
    """Codec ``int6_per_row``: as ``quantize`` but 2-D tensors past KEEP_FLOAT_MAX_NUMEL become per-row int6 (scales of
    ``int6_scales``, values round(w / scale) clipped to [-31, 31], bit-packed by ``pack_int6``; table codec
    ``int6_row``). ``hessians`` is ignored. Raises what ``quantize`` raises."""
    return quantize(weights, is_control, _int6_round)


def quantize_gptq(
    weights: dict[str, np.ndarray], is_control: Callable[[str], bool], hessians: dict[str, np.ndarray] | None
) -> tuple[dict, dict]:
    """Codec ``gptq_int6``: as ``quantize_int6``, but a 2-D tensor with an input Hessian in ``hessians`` ({canonical
    name: float64 (in, in)}) gets its int6 values from ``gptq`` (table codec ``int6_gptq``); one without keeps int6
    rounding (``int6_row``), so the table tells which tensors GPTQ chose. Same stored layout as int6_per_row.
    Raises what ``quantize`` and ``gptq`` raise."""
    hessians = hessians or {}

    def matrix(name: str, w: np.ndarray) -> tuple[str, dict, dict]:
        if name not in hessians:
            return _int6_round(name, w)
        scale = int6_scales(w)
        q = gptq(w, hessians[name], scale.astype(np.float32))
        return (
            "int6_gptq",
            {name: pack_int6(q), name + _SCALE: scale},
            {"scale": "fp32"} if scale.dtype == np.float32 else {},
        )

    return quantize(weights, is_control, matrix)


def dequantize(stored: dict[str, np.ndarray], table: dict[str, dict]) -> dict[str, np.ndarray]:
    """The inverse of ``quantize``: stored tensors + codec table -> {name: float32 array of the declared shape}.

    int8_row: int8 (rows, cols) × per-row scale (rows,) (fp16 or fp32); int8_tensor: int8 × scalar fp32 scale;
    int6_row / int6_gptq: bit-packed uint8 (``unpack_int6``) × per-row scale (rows,); fp16/fp32: widened to float32. Raises CorruptArtifact for a declared tensor that is missing, a malformed
    table entry, a missing or misshapen scale, an unknown codec or a shape that differs from the declared one.
    """
    out = {}
    for name, info in table.items():
        if name not in stored:
            raise CorruptArtifact(f"tensor '{name}' is declared but missing")
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            raise CorruptArtifact(f"the tensor table entry for '{name}' is malformed")
        q = stored[name]
        codec = info.get("codec")
        scale = stored.get(name + _SCALE)
        int6 = codec in ("int6_row", "int6_gptq")
        rows = info["shape"][0] if int6 and len(info["shape"]) == 2 else None
        want_scale = {
            "int8_row": (q.shape[0],) if q.ndim == 2 else None,
            "int8_tensor": (),
            "int6_row": (rows,),
            "int6_gptq": (rows,),
        }.get(codec, "none")
        want_dtype = np.uint8 if int6 else np.int8
        if want_scale != "none" and (scale is None or q.dtype != want_dtype or scale.shape != want_scale):
            raise CorruptArtifact(f"tensor '{name}' ({codec}) has a missing or misshapen scale")
        if int6 and rows is None:
            raise CorruptArtifact(f"tensor '{name}' ({codec}) is declared with shape {info['shape']}, not 2-D")
        if codec in ("fp16", "fp32"):
            w = q.astype(np.float32)
        elif codec == "int8_row":
            w = q.astype(np.float32) * scale.astype(np.float32)[:, None]
        elif codec == "int8_tensor":
            w = q.astype(np.float32) * np.float32(scale)
        elif int6:
            shape = [int(x) for x in info["shape"]]
            if min(shape) < 0 or math.prod(shape) > MAX_DECOMPRESSED:
                raise CorruptArtifact(f"tensor '{name}' declares an impossible shape {shape}")
            vals = unpack_int6(q, math.prod(shape)).reshape(shape)
            w = vals.astype(np.float32) * scale.astype(np.float32)[:, None]
        else:
            raise CorruptArtifact(f"unknown codec '{codec}' for tensor '{name}'")
        if list(w.shape) != list(info["shape"]):
            raise CorruptArtifact(f"tensor '{name}' has shape {w.shape}, declared {info['shape']}")
        out[name] = w
    return out


# ----------------------------------------------------------------------------------------------------------
# container


def _safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A standard safetensors container, written by hand so the same tensors always give the same bytes
    (safetensors' own writer orders `__metadata__` by a per-process random hash, so artifacts of identical
    runs differed in sha256 and could differ in compressed size)."""
    header: dict = {"__metadata__": {k: str(metadata[k]) for k in sorted(metadata)}}
    chunks, offset = [], 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name], order="C")  # not ascontiguousarray: that makes a 0-d scale 1-d
        dtype = next((k for k, v in _DTYPES.items() if np.dtype(v) == a.dtype), None)
        if dtype is None:
            raise GolfError(f"tensor '{name}' has dtype {a.dtype}; artifacts hold only {', '.join(_DTYPES)}")
        data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors' own writer does
    return len(raw).to_bytes(8, "little") + raw + b"".join(chunks)


def _parse_safetensors(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse by hand so every size is checked before a single tensor byte is touched."""
    if len(blob) < 8:
        raise CorruptArtifact("the container is shorter than its 8-byte header length")
    n = int.from_bytes(blob[:8], "little")
    if n > MAX_HEADER or 8 + n > len(blob):
        raise CorruptArtifact(f"container header claims {n} bytes, file has {len(blob) - 8}")
    try:
        header = json.loads(blob[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptArtifact("container header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CorruptArtifact("container header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(blob)[8 + n :]
    tensors = {}
    ranges = []
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CorruptArtifact(f"tensor '{name}' has a malformed entry or an unsupported dtype") from None
        if any(s < 0 for s in shape):
            raise CorruptArtifact(f"tensor '{name}' has a negative dimension")
        need = math.prod(shape) * np.dtype(dtype).itemsize
        if not (0 <= start <= end <= len(data)) or end - start != need:
            raise CorruptArtifact(
                f"tensor '{name}' declares {need} bytes at [{start}, {end}) but the container"
                f" holds {len(data)} data bytes; refusing to allocate"
            )
        tensors[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(shape)
        ranges.append((start, end, name))
    # As the safetensors library validates: the byte ranges, in offset order, tile the data exactly (no
    # overlap, no gap, nothing past the last tensor), so no byte is read twice or hidden.
    covered = 0
    for start, end, name in sorted(ranges):
        if start != covered:
            what = (
                "overlaps the tensor before it" if start < covered else f"leaves bytes [{covered}, {start}) uncovered"
            )
            raise CorruptArtifact(f"tensor '{name}' at [{start}, {end}) {what}")
        covered = end
    if covered != len(data):
        raise CorruptArtifact(f"the container holds {len(data) - covered} data bytes after its last tensor")
    return tensors, {str(k): str(v) for k, v in meta.items()}


def _bomb(limit: int) -> GolfError:
    return GolfError(
        f"artifact decompresses past {limit} bytes (a decompression bomb?); refused, use an artifact.golf written by"
        " `golf run`"
    )


def _corrupt(what: str) -> GolfError:
    return GolfError(f"artifact is truncated or corrupt ({what}); re-create or re-download it")


def _zstd_compress(raw: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)


def _zstd_decompress(blob: bytes, limit: int) -> bytes:
    import zstandard

    # Fed 1 KiB at a time: one call can inflate by at most ~32,768x (zstd's RLE blocks), so the bound is checked
    # long before a bomb's output could matter; `eof` tells a complete frame from a truncated one.
    dobj = zstandard.ZstdDecompressor().decompressobj()
    out = io.BytesIO()
    step = 1 << 10
    pos = 0
    try:
        while pos < len(blob) and not dobj.eof:
            out.write(dobj.decompress(blob[pos : pos + step]))
            pos += step
            if out.tell() > limit:
                raise _bomb(limit)
    except zstandard.ZstdError as exc:
        raise _corrupt(f"zstd: {exc}") from None
    if not dobj.eof:
        raise _corrupt("its zstd frame ends early")
    if dobj.unused_data or pos < len(blob):
        raise _corrupt("bytes after the end of its zstd frame")
    if out.tell() == 0:
        raise _corrupt("zstd frame decoded to nothing")
    return out.getvalue()


def _xz_compress(raw: bytes) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_XZ, preset=LZMA_PRESET)


def _xz_decompress(blob: bytes, limit: int) -> bytes:
    # ``max_length`` caps each call's output, so no call can inflate past the bound; the rest of the input stays
    # buffered inside the decompressor until it is asked for more.
    dobj = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    out = io.BytesIO()
    data = blob
    try:
        while not dobj.eof:
            out.write(dobj.decompress(data, max_length=min(1 << 20, limit + 1 - out.tell())))
            data = b""
            if out.tell() > limit:
                raise _bomb(limit)
            if not dobj.eof and dobj.needs_input:
                raise _corrupt("its xz stream ends early")
    except lzma.LZMAError as exc:
        raise _corrupt(f"xz: {exc}") from None
    if dobj.unused_data:
        raise _corrupt("bytes after the end of its xz stream")
    if out.tell() == 0:
        raise _corrupt("xz stream decoded to nothing")
    return out.getvalue()


def _brotli_compress(raw: bytes) -> bytes:
    import brotli

    return BROTLI_HEADER + brotli.compress(raw, quality=BROTLI_QUALITY)


def _brotli_decompress(blob: bytes, limit: int) -> bytes:
    import brotli

    # 1 KiB of input at a time, each call's output capped at 1 MiB; a capped call is drained with empty input
    # before more input goes in (brotli.Decompressor's contract), so the bound is checked every MiB.
    dobj = brotli.Decompressor()
    out = io.BytesIO()
    step, cap = 1 << 10, 1 << 20
    pos = len(BROTLI_HEADER)
    try:
        while not dobj.is_finished():
            if dobj.can_accept_more_data() and pos < len(blob):
                out.write(dobj.process(blob[pos : pos + step], output_buffer_limit=cap))
                pos += step
            else:
                chunk = dobj.process(b"", output_buffer_limit=cap)
                if not chunk and pos >= len(blob) and not dobj.is_finished() and dobj.can_accept_more_data():
                    raise _corrupt("its brotli stream ends early")
                out.write(chunk)
            if out.tell() > limit:
                raise _bomb(limit)
    except brotli.error as exc:
        raise _corrupt(f"brotli: {exc}") from None
    if pos < len(blob):
        raise _corrupt("bytes after the end of its brotli stream")
    if out.tell() == 0:
        raise _corrupt("brotli stream decoded to nothing")
    return out.getvalue()


@dataclass(frozen=True)
class Compressor:
    """One entry of ``COMPRESSORS``: ``compress(raw bytes) -> artifact bytes`` (starting with ``magic``) and
    ``decompress(artifact bytes, limit) -> raw bytes`` (GolfError past ``limit`` bytes or for a bad stream)."""

    magic: bytes
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes, int], bytes]


COMPRESSORS: dict[str, Compressor] = {
    "zstd-22": Compressor(ZSTD_MAGIC, _zstd_compress, _zstd_decompress),
    "lzma": Compressor(XZ_MAGIC, _xz_compress, _xz_decompress),
    "brotli": Compressor(BROTLI_HEADER, _brotli_compress, _brotli_decompress),
}
DEFAULT_COMPRESSOR = "zstd-22"


def compressor_of(blob: bytes) -> str:
    """The name of the compressor that wrote ``blob``, told by its first bytes (zstd or xz magic, golfbench's brotli
    header). Raises GolfError for a pickle / torch.save file or anything else."""
    if blob[:1] == b"\x80" or blob[:2] == b"PK":
        raise GolfError(
            "artifact is a pickle / torch.save file: golfbench loads only compressed safetensors and never"
            " unpickles (that would execute code); use an artifact.golf written by `golf run`"
        )
    for name, comp in COMPRESSORS.items():
        if blob[: len(comp.magic)] == comp.magic:
            return name
    raise GolfError(
        "artifact is not a golfbench artifact (no zstd frame magic, xz magic or golfbench brotli header); is this the"
        " right file?"
    )


def _decompress(blob: bytes, limit: int = MAX_DECOMPRESSED) -> bytes:
    """Artifact bytes -> the raw container, with the compressor its first bytes name, never past ``limit`` bytes."""
    return COMPRESSORS[compressor_of(blob)].decompress(blob, limit)


# ----------------------------------------------------------------------------------------------------------


def pack(
    weights: dict[str, np.ndarray],
    is_control: Callable[[str], bool],
    meta: dict,
    codec: str = DEFAULT_CODEC_NAME,
    compressor: str = "zstd-22",
    hessians: dict[str, np.ndarray] | None = None,
) -> bytes:
    """Weights -> compressed artifact bytes. `meta` (model, preset, config, backend) travels inside.

    weights: {name: float array}; the codec's stored tensors go into a deterministic safetensors container whose
    metadata names the codec and compressor, compressed by ``compressor``. ``hessians`` ({canonical name: float64
    (in, in)}) feed ``gptq_int6``; other codecs ignore them. Raises GolfError for an unknown codec or compressor
    (listing the choices) and whatever the codec refuses (a reserved name, a NaN/inf weight; see ``quantize``).
    """
    codec = check_codec(codec)
    check_compressor(compressor)
    stored, table = CODECS[codec].quantize(weights, is_control, hessians)
    metadata = {
        "format": FORMAT,
        "codec": codec,
        "compressor": compressor,
        "tensors": json.dumps(table, sort_keys=True),
        "meta": json.dumps(meta, sort_keys=True),
    }
    raw = _safetensors_bytes(stored, metadata)
    return COMPRESSORS[compressor].compress(raw)


def check_codec(name: str) -> str:
    """The registered codec ``name`` (``int8`` is read as ``int8_per_row``). Raises GolfError listing the choices."""
    name = CODEC_ALIASES.get(name, name)
    if name not in CODECS:
        raise GolfError(f"unknown codec '{name}': choose one of {', '.join(CODECS)}")
    return name


def check_compressor(name: str) -> str:
    """``name`` when it is a registered compressor. Raises GolfError listing the choices."""
    if name not in COMPRESSORS:
        raise GolfError(f"unknown compressor '{name}': choose one of {', '.join(COMPRESSORS)}")
    return name


def _open(blob: bytes) -> tuple[dict[str, np.ndarray], dict, str, str]:
    """(stored tensors, tensor table, codec, compressor) of an artifact; the checks of ``unpack``."""
    compressor = compressor_of(blob)
    tensors, metadata = _parse_safetensors(_decompress(blob))
    if metadata.get("format") != FORMAT:
        raise GolfError(f"artifact format '{metadata.get('format')}' is not {FORMAT}; it was not made by golfbench")
    codec = CODEC_ALIASES.get(metadata.get("codec", ""), metadata.get("codec", ""))
    if codec not in CODECS:
        raise GolfError(
            f"artifact uses unknown codec '{metadata.get('codec', '')}'; this golfbench knows {', '.join(CODECS)},"
            " upgrade it"
        )
    said = metadata.get("compressor", "zstd-22")  # artifacts from before the registry were all zstd-22
    if said != compressor:
        raise CorruptArtifact(f"its metadata says compressor '{said}' but its bytes are {compressor}")
    try:
        table = json.loads(metadata["tensors"])
    except (KeyError, json.JSONDecodeError):
        raise CorruptArtifact("its tensor table is missing or not JSON") from None
    if not isinstance(table, dict):
        raise CorruptArtifact("its tensor table or metadata is not a JSON object")
    return tensors, {"table": table, "metadata": metadata}, codec, compressor


def unpack(blob: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """Compressed artifact bytes -> (dequantized fp32 weights, meta). Executes nothing.

    Raises GolfError for a pickle/torch.save file, a blob with no known compressor magic, a truncated or corrupt
    stream, output past MAX_DECOMPRESSED bytes, a foreign format or an unknown codec; CorruptArtifact (a GolfError)
    for a malformed container or tensor table.
    """
    tensors, info, codec, _ = _open(blob)
    try:
        meta = json.loads(info["metadata"].get("meta", "{}"))
    except json.JSONDecodeError:
        raise CorruptArtifact("its tensor table is missing or not JSON") from None
    if not isinstance(meta, dict):
        raise CorruptArtifact("its tensor table or metadata is not a JSON object")
    weights = CODECS[codec].dequantize(tensors, info["table"])
    return weights, meta


def describe(blob: bytes) -> dict:
    """{"codec", "compressor"} of an artifact (``int8`` reported as ``int8_per_row``), for inspect and verify."""
    _, _, codec, compressor = _open(blob)
    return {"codec": codec, "compressor": compressor}


def entries(blob: bytes) -> list[TensorEntry]:
    """Per-tensor table for `golf artifact inspect` (stored bytes before compression)."""
    tensors, info, _, _ = _open(blob)
    table = info["table"]
    out = []
    for name, info in sorted(table.items()):
        nbytes = tensors[name].nbytes + (tensors[name + _SCALE].nbytes if name + _SCALE in tensors else 0)
        out.append(TensorEntry(name, tuple(info["shape"]), info["codec"], nbytes))
    return out


TOKENIZER_FILE = "tokenizer.model.zst"  # the counted tokenizer, in a run directory and a submission folder
MAX_TOKENIZER = 64 * 1024 * 1024


def pack_tokenizer(raw: bytes) -> bytes:
    """The tokenizer as a track that counts it (``count_tokenizer_bytes``) ships and counts it: the dataset's
    .model bytes compressed with zstd-22, the way the model's own bytes are counted (parameter-golf records that
    shipped a tokenizer shipped it raw; counting the raw ~255 kB sp1024 model, mostly its nmt_nfkc charsmap, would
    push parameter-golf's own baseline over the cap). Stored as ``TOKENIZER_FILE`` so verify never recompresses."""
    return _zstd_compress(raw)


def unpack_tokenizer(blob: bytes) -> bytes:
    """The .model bytes inside a ``pack_tokenizer`` blob, decompressed with a bound (MAX_TOKENIZER). Raises GolfError
    for a corrupt, truncated or oversized stream."""
    if blob[:4] != ZSTD_MAGIC:
        raise GolfError(f"{TOKENIZER_FILE} is not a zstd stream; re-export it from the run")
    return _zstd_decompress(blob, MAX_TOKENIZER)


def size_report(model_bytes: int, code: int, cap: int = CAP_BYTES, tokenizer: int = 0) -> dict:
    """The size rule for ``model_bytes`` (compressed artifact bytes) + ``code`` (code bytes) + ``tokenizer``
    (the dataset's tokenizer .model bytes where the track counts them, ``count_tokenizer_bytes``; else 0): a
    dict with model_bytes, code_bytes, tokenizer_bytes, total_bytes, cap_bytes and under_cap (total <= cap; the
    cap is decimal bytes, 16,000,000 by default, as in parameter-golf, which never counted the tokenizer).
    """
    total = model_bytes + code + tokenizer
    return {
        "model_bytes": model_bytes,
        "code_bytes": code,
        "tokenizer_bytes": tokenizer,
        "total_bytes": total,
        "cap_bytes": cap,
        "under_cap": total <= cap,
    }


@contextmanager
def naming(source):
    """Name the file in every error raised while reading it: `golf eval x.golf` says which file is bad."""
    try:
        yield
    except GolfError as exc:
        raise GolfError(f"{source}: {exc}") from None


def read_artifact(path: Path) -> bytes:
    """The raw bytes of the artifact file at ``path``. Raises GolfError for an unreadable file."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise GolfError(f"cannot read artifact {path}: {exc.strerror}; check the path") from None


@dataclass(frozen=True)
class Codec:
    """One entry of ``CODECS``: ``quantize(weights, is_control, hessians) -> (stored tensors, table)``, the shared
    ``dequantize``, and whether it needs the backend's per-layer input Hessians (Backend.input_hessians)."""

    quantize: Callable
    dequantize: Callable
    needs_hessians: bool = False


CODECS: dict[str, Codec] = {
    "int8_per_row": Codec(lambda w, c, h=None: quantize(w, c), dequantize),
    "int6_per_row": Codec(quantize_int6, dequantize),
    "gptq_int6": Codec(quantize_gptq, dequantize, needs_hessians=True),
}
CODEC_ALIASES = {"int8": "int8_per_row"}  # artifacts written before the registry say "int8"
