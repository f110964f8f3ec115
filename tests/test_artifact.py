"""The artifact codec, container, size rule and hostile-file handling."""

import json

import numpy as np
import pytest
import zstandard

from golfbench.harness import artifact as art
from golfbench.harness.errors import GolfError
from golfbench.harness.init import init_weights
from golfbench.harness.models import get_spec


def _pack(weights, control=lambda n: False, meta=None):
    return art.pack(weights, control, meta or {"model": "x"})


def test_int8_round_trip_error_is_bounded_per_row():
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(300, 400)) * rng.uniform(0.5, 3.0, size=(300, 1))).astype(np.float32)
    out, _ = art.unpack(_pack({"w": w}))
    clip = np.quantile(np.abs(w), art.CLIP_Q, axis=1)
    scale = np.maximum(clip / 127, 1 / 127)
    err = np.abs(out["w"] - np.clip(w, -clip[:, None], clip[:, None]))
    # half a quantization step, plus |q| <= 127 times the fp16 rounding of the scale (2**-11 relative)
    assert (err <= scale[:, None] * (0.5 + 127 * 2.0**-11) + 1e-6).all()
    assert np.median(err / scale[:, None]) < 0.3
    assert out["w"].dtype == np.float32 and out["w"].shape == w.shape


def test_codec_matches_parameter_golf_rules_on_a_crafted_row():
    # numel > 65,536 and 2-D -> per-row int8; scale floor 1/127 keeps small rows coarse (as in the baseline)
    w = np.zeros((2, 40000), dtype=np.float32)
    w[0, :3] = [2.54, -1.27, 0.01]
    w[1, :2] = [0.1, -0.05]
    stored, table = art.quantize({"w": w}, lambda n: False)
    assert table["w"]["codec"] == "int8_row"
    s0 = float(stored["w.__scale"][0])
    clip0 = np.quantile(np.abs(w[0]), art.CLIP_Q)
    assert s0 == pytest.approx(clip0 / 127, rel=1e-3)
    assert stored["w.__scale"][1] == np.float16(1 / 127)  # floor
    # the 99.99984th percentile interpolates between the two largest |w| of row 1, so 0.1 is clipped
    clip1 = 0.05 + (art.CLIP_Q * 39999 - 39998) * 0.05
    assert np.quantile(np.abs(w[1]), art.CLIP_Q) == pytest.approx(clip1)
    assert stored["w"][1, 0] == round(clip1 * 127) == 12 and stored["w"][1, 1] == round(-0.05 * 127)


def test_small_tensors_keep_float_and_control_tensors_stay_fp32():
    w = {"small": np.full((10,), 1 / 3, np.float32), "blocks.0.attn_scale": np.full((10,), 1 / 3, np.float32)}
    stored, table = art.quantize(w, get_spec("llama").is_control)
    assert table["small"]["codec"] == "fp16" and stored["small"].dtype == np.float16
    assert table["blocks.0.attn_scale"]["codec"] == "fp32"
    out, _ = art.unpack(art.pack(w, get_spec("llama").is_control, {}))
    assert out["blocks.0.attn_scale"][0] == np.float32(1 / 3)


def test_meta_travels_inside():
    _, meta = art.unpack(_pack({"w": np.ones((3,), np.float32)}, meta={"model": "llama", "preset": "tiny"}))
    assert meta == {"model": "llama", "preset": "tiny"}


def test_untrained_llama_baseline_fits_under_the_cap():
    spec = get_spec("llama")
    cfg = spec.config("baseline")
    blob = art.pack(init_weights(spec, cfg, 0), spec.is_control, {"model": "llama"})
    # Untrained weights are small (kaiming bound 0.044, zero-init projections) and the 1/127 scale floor maps
    # them onto a few int8 levels, so they compress far below a trained model's ~15.8 MB.
    assert 1_000_000 < len(blob) < art.CAP_BYTES
    rep = art.size_report(len(blob), 50_000)
    assert rep["total_bytes"] == len(blob) + 50_000 and rep["under_cap"]
    assert not art.size_report(art.CAP_BYTES - 10, 11)["under_cap"]
    assert art.size_report(art.CAP_BYTES - 10, 10)["under_cap"]  # the cap is inclusive, decimal bytes


def test_pickle_is_refused_without_unpickling(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("EXECUTED",))

    with pytest.raises(GolfError, match="pickle"):
        art.unpack(pickle.dumps(Boom()))
    with pytest.raises(GolfError, match="pickle"):
        art.unpack(b"PK\x03\x04torchzip")


@pytest.mark.parametrize("mutate", ["truncate", "flip", "garbage"])
def test_corrupt_or_truncated_zstd_is_refused(mutate):
    blob = bytearray(_pack({"w": np.random.default_rng(1).normal(size=(300, 300)).astype(np.float32)}))
    if mutate == "truncate":
        blob = blob[: len(blob) // 2]
    elif mutate == "flip":
        for i in range(40, len(blob), 97):
            blob[i] ^= 0xFF
    else:
        blob = b"hello world, not an artifact"
    with pytest.raises(GolfError):
        art.unpack(bytes(blob))


def _container(header: dict, data: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return zstandard.ZstdCompressor().compress(len(h).to_bytes(8, "little") + h + data)


def test_header_claiming_a_huge_tensor_is_refused_before_allocation():
    blob = _container(
        {
            "w": {"dtype": "F32", "shape": [25_000_000_000], "data_offsets": [0, 100_000_000_000]},
            "__metadata__": {"format": art.FORMAT, "codec": "int8", "tensors": "{}"},
        },
        b"\0" * 64,
    )
    with pytest.raises(GolfError, match="refusing to allocate"):
        art.unpack(blob)


def test_zstd_bomb_is_refused():
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\0" * (art.MAX_DECOMPRESSED + 2 * 1024 * 1024))
    assert len(bomb) < 1_000_000
    with pytest.raises(GolfError, match="bomb"):
        art.unpack(bomb)


def test_unknown_dtype_and_foreign_format_are_refused():
    with pytest.raises(GolfError):
        art.unpack(_container({"w": {"dtype": "O", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8))
    with pytest.raises(GolfError, match="not made by golfbench"):
        art.unpack(_container({"__metadata__": {"format": "other"}}))


def test_canonical_init_draws_an_independent_stream_per_tensor():
    # Names sharing a long prefix (layers.0.wv.weight / layers.0.wr.weight) must not share random draws.
    spec = get_spec("megalodon")
    w = init_weights(spec, spec.config("tiny"), 0)
    assert not np.array_equal(w["layers.0.wv.weight"], w["layers.0.wr.weight"])
    assert not np.array_equal(w["layers.0.ffn.w1.weight"], w["layers.0.ffn.w3.weight"])
    assert not np.array_equal(w["layers.0.cema.alpha"], w["layers.0.cema.delta"])
    assert np.array_equal(w["layers.0.wv.weight"], init_weights(spec, spec.config("tiny"), 0)["layers.0.wv.weight"])
    assert not np.array_equal(w["layers.0.wv.weight"], init_weights(spec, spec.config("tiny"), 1)["layers.0.wv.weight"])


# ----------------------------------------------------------------------------------------------------------
# numbers that are not numbers: nothing overflows fp16 silently, nothing non-finite is packed


def test_a_small_tensor_beyond_fp16_stays_fp32_and_is_recorded():
    w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    w[3, 4] = 1e5  # fp16's largest finite value is 65,504: stored as fp16 this became inf
    with np.errstate(over="ignore"):
        assert np.isinf(np.float16(1e5))
    weights, _ = art.unpack(_pack({"w": w, "v": np.ones(4, np.float32)}))
    assert np.array_equal(weights["w"], w)  # kept exactly, in fp32
    table = {e.name: e for e in art.entries(_pack({"w": w}))}
    assert table["w"].codec == "fp32" and table["w"].stored_bytes == 64 * 4
    tensors, meta = art._parse_safetensors(art._decompress(_pack({"w": w})))
    assert json.loads(meta["tensors"])["w"] == {"codec": "fp32", "fp16_overflow": True, "shape": [8, 8]}


def test_a_row_scale_beyond_fp16_is_stored_fp32():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(300, 300)).astype(np.float32)
    w[7] *= 1e7  # clip/127 ~ 3e5 > 65,504: an fp16 scale would be inf and the whole row inf
    weights, _ = art.unpack(_pack({"w": w}))
    assert np.isfinite(weights["w"]).all()
    row_err = np.abs(weights["w"][7] - np.clip(w[7], -np.abs(w[7]).max(), np.abs(w[7]).max())).max()
    assert row_err <= np.abs(w[7]).max() / 127  # half a step of rounding, plus the clip
    _, meta = art._parse_safetensors(art._decompress(_pack({"w": w})))
    assert json.loads(meta["tensors"])["w"]["scale"] == "fp32"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(bad):
    w = np.zeros((4, 4), np.float32)
    w[1, 2] = bad
    with pytest.raises(GolfError, match="'w' holds NaN or inf values"):
        _pack({"w": w})


def _two_tensor_container(offsets_a, offsets_b, data_len=16) -> bytes:
    meta = {
        "format": art.FORMAT,
        "codec": "int8",
        "tensors": json.dumps({"a": {"codec": "fp32", "shape": [2]}, "b": {"codec": "fp32", "shape": [2]}}),
    }
    return _container(
        {
            "__metadata__": meta,
            "a": {"dtype": "F32", "shape": [2], "data_offsets": offsets_a},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": offsets_b},
        },
        b"\0" * data_len,
    )


@pytest.mark.parametrize(
    "a, b, n, needle",
    [
        ([0, 8], [4, 12], 16, "overlaps"),  # b reads a's last 4 bytes
        ([0, 8], [0, 8], 16, "overlaps"),  # both name the same bytes
        ([0, 8], [12, 20], 20, "uncovered"),  # a gap of 4 hidden bytes
        ([8, 16], [16, 24], 24, "uncovered"),  # nothing at offset 0
        ([0, 8], [8, 16], 20, "after its last tensor"),  # trailing bytes
    ],
)
def test_container_byte_ranges_must_tile_the_data_as_safetensors_requires(a, b, n, needle):
    from safetensors import SafetensorError
    from safetensors.numpy import load

    blob = _two_tensor_container(a, b, n)
    with pytest.raises(SafetensorError):  # the safetensors library itself refuses the same container
        load(zstandard.ZstdDecompressor().decompress(blob))
    with pytest.raises(GolfError, match=needle):
        art.unpack(blob)


def test_a_well_formed_two_tensor_container_loads_in_any_header_order():
    from safetensors.numpy import load

    blob = _two_tensor_container([8, 16], [0, 8])  # listed out of offset order: still valid
    assert sorted(load(zstandard.ZstdDecompressor().decompress(blob))) == ["a", "b"]
    weights, _ = art.unpack(blob)
    assert sorted(weights) == ["a", "b"]
