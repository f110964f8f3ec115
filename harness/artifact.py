"""The artifact: quantize -> safetensors container -> zstd-22, and its size rule.

Cap: 16,000,000 bytes (decimal) = code bytes (raw UTF-8 source of the backend's model files) + the
compressed model bytes. Loading never executes anything: the container is parsed by hand, every declared
size is checked against the bytes actually present before anything is allocated, and decompression stops
at a fixed bound, so a hostile file can only be refused.

Codec `int8` is parameter-golf's `int8_clean_per_row_v1`: 2-D float tensors with more than 65,536 elements
become per-row int8 (clip at the 99.99984th percentile of |w| per row, scale = max(clip/127, 1/127) in fp16);
smaller tensors are kept as fp16, or fp32 for the spec's declared control tensors; other large float tensors
get per-tensor int8 with an fp32 scale.
"""

from __future__ import annotations

import io
import json
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

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DTYPES = {"F32": np.float32, "F16": np.float16, "I8": np.int8}
_SCALE = ".__scale"


class CorruptArtifact(GolfError):
    """A damaged or hostile container: refused, with what to do."""

    def __init__(self, what: str) -> None:
        super().__init__(f"artifact is corrupt: {what}; re-create it with `golf run` or re-download it")


@dataclass
class TensorEntry:
    """One row of `golf artifact inspect`: a tensor's ``name``, its original ``shape``, its ``codec`` (int8_row,
    int8_tensor, fp16 or fp32) and ``stored_bytes``, the bytes it takes in the container before compression
    (int8 values plus its scale, if any).
    """

    name: str
    shape: tuple[int, ...]
    codec: str  # int8_row | int8_tensor | fp16 | fp32
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


def quantize(weights: dict[str, np.ndarray], is_control: Callable[[str], bool]) -> tuple[dict, dict]:
    """Return (stored tensors, per-tensor codec table) for codec `int8`.

    weights: {name: float array}. A small tensor that parameter-golf would keep in fp16 but whose values
    overflow fp16 is kept in fp32 instead, and its table entry says so (``"fp16_overflow": true``); so is a
    per-row scale that would overflow fp16 (``"scale": "fp32"``). Raises GolfError for a reserved name or a
    NaN/inf weight (the model diverged: there is nothing meaningful to store).
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


def dequantize(stored: dict[str, np.ndarray], table: dict[str, dict]) -> dict[str, np.ndarray]:
    """The inverse of ``quantize``: stored tensors + codec table -> {name: float32 array of the declared shape}.

    int8_row: int8 (rows, cols) × per-row scale (rows,) (fp16 or fp32); int8_tensor: int8 × scalar fp32 scale;
    fp16/fp32: widened to float32. Raises CorruptArtifact for a declared tensor that is missing, a malformed
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
        want_scale = {"int8_row": (q.shape[0],) if q.ndim == 2 else None, "int8_tensor": ()}.get(codec, "none")
        if want_scale != "none" and (scale is None or q.dtype != np.int8 or scale.shape != want_scale):
            raise CorruptArtifact(f"tensor '{name}' ({codec}) has a missing or misshapen scale")
        if codec in ("fp16", "fp32"):
            w = q.astype(np.float32)
        elif codec == "int8_row":
            w = q.astype(np.float32) * scale.astype(np.float32)[:, None]
        elif codec == "int8_tensor":
            w = q.astype(np.float32) * np.float32(scale)
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
        a = np.ascontiguousarray(tensors[name])
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


def _decompress(blob: bytes, limit: int = MAX_DECOMPRESSED) -> bytes:
    import zstandard

    if blob[:1] == b"\x80" or blob[:2] == b"PK":
        raise GolfError(
            "artifact is a pickle / torch.save file: golfbench loads only zstd-compressed safetensors and never"
            " unpickles (that would execute code); use an artifact.golf written by `golf run`"
        )
    if blob[:4] != ZSTD_MAGIC:
        raise GolfError("artifact is not a golfbench artifact (no zstd frame magic); is this the right file?")
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
                raise GolfError(
                    f"artifact decompresses past {limit} bytes (a decompression bomb?); refused, use an artifact.golf"
                    " written by `golf run`"
                )
    except zstandard.ZstdError as exc:
        raise GolfError(f"artifact is truncated or corrupt (zstd: {exc}); re-create or re-download it") from None
    if not dobj.eof:
        raise GolfError("artifact is truncated or corrupt (its zstd frame ends early); re-create or re-download it")
    if dobj.unused_data or pos < len(blob):
        raise GolfError(
            "artifact is truncated or corrupt (bytes after the end of its zstd frame); re-create or re-download it"
        )
    if out.tell() == 0:
        raise GolfError("artifact is truncated or corrupt (zstd frame decoded to nothing); re-create or re-download it")
    return out.getvalue()


# ----------------------------------------------------------------------------------------------------------


def pack(
    weights: dict[str, np.ndarray],
    is_control: Callable[[str], bool],
    meta: dict,
    codec: str = "int8",
) -> bytes:
    """Weights -> compressed artifact bytes. `meta` (model, preset, config, backend) travels inside.

    weights: {name: float array}; the codec's stored tensors go into a deterministic safetensors container,
    compressed with zstd level 22. Raises GolfError for an unknown codec and whatever the codec refuses
    (a reserved name, a NaN/inf weight; see ``quantize``).
    """
    import zstandard

    if codec not in CODECS:
        raise GolfError(f"unknown codec '{codec}': choose one of {', '.join(CODECS)}")
    stored, table = CODECS[codec][0](weights, is_control)
    metadata = {
        "format": FORMAT,
        "codec": codec,
        "tensors": json.dumps(table, sort_keys=True),
        "meta": json.dumps(meta, sort_keys=True),
    }
    raw = _safetensors_bytes(stored, metadata)
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)


def unpack(blob: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """Compressed artifact bytes -> (dequantized fp32 weights, meta). Executes nothing.

    Raises GolfError for a pickle/torch.save file, a blob without the zstd magic, a truncated or corrupt frame,
    output past MAX_DECOMPRESSED bytes, a foreign format or an unknown codec; CorruptArtifact (a GolfError)
    for a malformed container or tensor table.
    """
    tensors, metadata = _parse_safetensors(_decompress(blob))
    if metadata.get("format") != FORMAT:
        raise GolfError(f"artifact format '{metadata.get('format')}' is not {FORMAT}; it was not made by golfbench")
    codec = metadata.get("codec", "")
    if codec not in CODECS:
        raise GolfError(f"artifact uses unknown codec '{codec}'; this golfbench knows {', '.join(CODECS)}, upgrade it")
    try:
        table = json.loads(metadata["tensors"])
        meta = json.loads(metadata.get("meta", "{}"))
    except (KeyError, json.JSONDecodeError):
        raise CorruptArtifact("its tensor table is missing or not JSON") from None
    if not isinstance(table, dict) or not isinstance(meta, dict):
        raise CorruptArtifact("its tensor table or metadata is not a JSON object")
    weights = CODECS[codec][1](tensors, table)
    return weights, meta


def entries(blob: bytes) -> list[TensorEntry]:
    """Per-tensor table for `golf artifact inspect` (stored bytes before compression)."""
    tensors, metadata = _parse_safetensors(_decompress(blob))
    table = json.loads(metadata["tensors"])
    out = []
    for name, info in sorted(table.items()):
        nbytes = tensors[name].nbytes + (tensors[name + _SCALE].nbytes if name + _SCALE in tensors else 0)
        out.append(TensorEntry(name, tuple(info["shape"]), info["codec"], nbytes))
    return out


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


CODECS: dict[str, tuple[Callable, Callable]] = {"int8": (quantize, dequantize)}
