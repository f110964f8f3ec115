"""Codecs and compressors by name: int6 packing, GPTQ, bounded decompressors, the backends' Hessian hook, and a
`golf run --codec gptq_int6 --compressor brotli` that records its calibration and verifies."""

from __future__ import annotations

import json
import lzma
import math
import shutil

import brotli
import numpy as np
import pytest
import zstandard
from golf_helpers import RUN_ARGS, golf, golf_ok, one_line_error, small_dataset

from golfbench.harness import artifact as art
from golfbench.harness.errors import GolfError

NO_CONTROL = lambda n: False  # noqa: E731


# ----------------------------------------------------------------------------------------------------------
# int6 packing


def test_int6_packing_layout_by_hand():
    # values -31, 0, 31, 1 -> codes 1, 32, 63, 33 -> 1 + 32*2**6 + 63*2**12 + 33*2**18 = 8,910,849 = 0x87F801
    packed = art.pack_int6(np.array([-31, 0, 31, 1]))
    assert packed.dtype == np.uint8 and packed.tolist() == [0x01, 0xF8, 0x87]
    # one value pads with three codes 32 (the value 0): 0x20 | 0x20 << 6 | 0x20 << 12 | ... for the padding
    one = art.pack_int6(np.array([5]))
    word = 37 | 32 << 6 | 32 << 12 | 32 << 18
    assert one.tolist() == [word & 0xFF, word >> 8 & 0xFF, word >> 16]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 1001])
def test_int6_packing_is_exact_for_every_value_in_range(n):
    q = np.random.default_rng(n).integers(-31, 32, size=n)
    packed = art.pack_int6(q)
    assert packed.size == 3 * math.ceil(n / 4)
    assert np.array_equal(art.unpack_int6(packed, n), q.astype(np.int8))


def test_int6_packing_refuses_out_of_range_values_and_corrupt_codes():
    with pytest.raises(ValueError, match=r"\[-31, 31\]"):
        art.pack_int6(np.array([32]))
    with pytest.raises(ValueError):
        art.pack_int6(np.array([-32]))
    with pytest.raises(art.CorruptArtifact, match="code 0"):
        art.unpack_int6(np.zeros(3, np.uint8), 4)
    with pytest.raises(art.CorruptArtifact, match="padding"):
        art.unpack_int6(art.pack_int6(np.array([1, 2, 3, 4])), 2)  # values 3, 4 sit where padding belongs
    with pytest.raises(art.CorruptArtifact, match="bytes"):
        art.unpack_int6(np.zeros(4, np.uint8), 4)


def test_int6_per_row_round_trip_error_is_bounded_per_row():
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(300, 400)) * rng.uniform(0.005, 0.05, size=(300, 1))).astype(np.float32)
    blob = art.pack({"w": w}, NO_CONTROL, {}, codec="int6_per_row")
    out, _ = art.unpack(blob)
    # the rule, computed here: clip at the 99.99984th percentile per row, scale max(clip/31, 2**-14) in fp16
    clip = np.quantile(np.abs(w), 0.9999984, axis=1)
    scale = np.maximum(clip / 31, 2.0**-14).astype(np.float16).astype(np.float64)[:, None]
    err = np.abs(out["w"].astype(np.float64) - w)
    bound = scale / 2 + np.maximum(0.0, np.abs(w) - 31 * scale) + 1e-7
    assert (err <= bound).all()
    assert np.abs(out["w"] / scale - np.round(out["w"] / scale)).max() < 1e-4  # on the grid
    assert np.abs(np.round(out["w"] / scale)).max() <= 31
    entry = next(e for e in art.entries(blob) if e.name == "w")
    assert entry.codec == "int6_row" and entry.stored_bytes == 3 * 300 * 400 // 4 + 300 * 2


# ----------------------------------------------------------------------------------------------------------
# GPTQ


def _correlated_problem(rows=96, cols=160, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, cols)) @ (rng.normal(size=(cols, cols)) / np.sqrt(cols) + np.eye(cols))
    W = rng.normal(size=(rows, cols)) * 0.05
    return X, W


def test_gptq_beats_int6_rounding_in_layer_output_error():
    X, W = _correlated_problem()
    scale = art.int6_scales(W.astype(np.float32)).astype(np.float64)
    q = art.gptq(W, X.T @ X, scale)
    assert q.dtype == np.int8 and np.abs(q).max() <= 31
    rounded = np.clip(np.round(W / scale[:, None]), -31, 31)  # plain rounding on the same grid, done here
    err_gptq = np.linalg.norm(X @ W.T - X @ (q * scale[:, None]).T)
    err_round = np.linalg.norm(X @ W.T - X @ (rounded * scale[:, None]).T)
    assert err_gptq < 0.8 * err_round, (err_gptq, err_round)


def test_gptq_codec_uses_hessians_where_given_and_rounds_elsewhere():
    X, W = _correlated_problem(rows=512, cols=160)  # 81,920 elements: past the keep-float threshold
    w = {"a.weight": W.astype(np.float32), "b.weight": W.astype(np.float32), "n": np.ones(4, np.float32)}
    blob = art.pack(w, NO_CONTROL, {}, codec="gptq_int6", compressor="lzma", hessians={"a.weight": X.T @ X})
    out, _ = art.unpack(blob)
    codecs = {e.name: e.codec for e in art.entries(blob)}
    assert codecs == {"a.weight": "int6_gptq", "b.weight": "int6_row", "n": "fp16"}
    assert art.describe(blob) == {"codec": "gptq_int6", "compressor": "lzma"}
    err = {k: np.linalg.norm(X @ W.T - X @ out[k].astype(np.float64).T) for k in ("a.weight", "b.weight")}
    assert err["a.weight"] < 0.8 * err["b.weight"], err
    # b was rounded: exactly int6_per_row's values
    ref, _ = art.unpack(art.pack({"b.weight": w["b.weight"]}, NO_CONTROL, {}, codec="int6_per_row"))
    assert np.array_equal(out["b.weight"], ref["b.weight"])


# ----------------------------------------------------------------------------------------------------------
# compressors


def _weights():
    rng = np.random.default_rng(1)
    return {"w": rng.normal(size=(300, 300)).astype(np.float32) * 0.02, "s": np.ones(7, np.float32)}


@pytest.mark.parametrize("compressor", list(art.COMPRESSORS))
def test_each_compressor_round_trips_and_is_told_by_its_first_bytes(compressor):
    blob = art.pack(_weights(), NO_CONTROL, {"model": "x"}, compressor=compressor)
    magic = {"zstd-22": b"\x28\xb5\x2f\xfd", "lzma": b"\xfd7zXZ\x00", "brotli": b"GBr1"}[compressor]
    assert blob.startswith(magic)
    assert art.compressor_of(blob) == compressor
    out, meta = art.unpack(blob)
    ref, _ = art.unpack(art.pack(_weights(), NO_CONTROL, {"model": "x"}))
    assert meta == {"model": "x"} and all(np.array_equal(out[k], ref[k]) for k in ref)


def _compressed(compressor: str, raw: bytes) -> bytes:
    """``raw`` compressed here with the libraries themselves (not the code under test)."""
    if compressor == "zstd-22":
        return zstandard.ZstdCompressor(level=3).compress(raw)
    if compressor == "lzma":
        return lzma.compress(raw, format=lzma.FORMAT_XZ, preset=0)
    return b"GBr1" + brotli.compress(raw, quality=1)


@pytest.mark.parametrize("compressor", list(art.COMPRESSORS))
def test_each_compressor_stops_at_the_bound_and_refuses_truncated_or_trailing_bytes(compressor):
    bomb = _compressed(compressor, b"\0" * (3 << 20))  # 3 MiB of zeros in a few hundred bytes
    assert len(bomb) < 4096
    with pytest.raises(GolfError, match="decompression bomb"):
        art._decompress(bomb, limit=1 << 20)
    assert len(art._decompress(bomb, limit=4 << 20)) == 3 << 20
    good = art.pack(_weights(), NO_CONTROL, {}, compressor=compressor)
    with pytest.raises(GolfError, match="truncated or corrupt"):
        art.unpack(good[: len(good) // 2])
    with pytest.raises(GolfError, match="truncated or corrupt"):
        art.unpack(good + b"extra")


def test_metadata_must_name_the_compressor_of_the_bytes():
    blob = art.pack(_weights(), NO_CONTROL, {}, compressor="brotli")
    raw = art._decompress(blob)
    relabelled = lzma.compress(raw, format=lzma.FORMAT_XZ)  # brotli's container, xz bytes
    with pytest.raises(GolfError, match="metadata says compressor 'brotli' but its bytes are lzma"):
        art.unpack(relabelled)


def test_artifacts_that_say_int8_load_as_int8_per_row():
    blob = art.pack(_weights(), NO_CONTROL, {})
    raw = art._decompress(blob)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"]["codec"] = "int8"
    header["__metadata__"].pop("compressor")  # as written before the registry
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    old = zstandard.ZstdCompressor().compress(len(head).to_bytes(8, "little") + head + raw[8 + n :])
    assert art.describe(old) == {"codec": "int8_per_row", "compressor": "zstd-22"}
    out, _ = art.unpack(old)
    assert np.array_equal(out["w"], art.unpack(blob)[0]["w"])


def test_unknown_codec_or_compressor_names_list_the_choices():
    with pytest.raises(GolfError, match="unknown codec 'int4': choose one of int8_per_row, int6_per_row, gptq_int6"):
        art.pack(_weights(), NO_CONTROL, {}, codec="int4")
    with pytest.raises(GolfError, match="unknown compressor 'gzip': choose one of zstd-22, lzma, brotli"):
        art.pack(_weights(), NO_CONTROL, {}, compressor="gzip")


# ----------------------------------------------------------------------------------------------------------
# the backends' Hessian hook


def test_torch_and_jax_input_hessians_agree_for_llama():
    from golfbench.harness.backend import get_backend
    from golfbench.harness.models import get_spec

    spec = get_spec("llama")
    cfg = spec.config("tiny")
    batch = np.random.default_rng(0).integers(0, cfg["vocab_size"], size=(2, 33), dtype=np.int32)
    hs = {}
    for name in ("torch", "jax"):
        backend = get_backend(name)
        hs[name] = backend.input_hessians(backend.init("llama", cfg, 0), [batch[:1], batch[1:]])
    linears = sorted(n for n, s in spec.shapes(cfg).items() if len(s) == 2 and n != "tok_emb.weight")
    linears = [n for n in linears if n.endswith(".weight")]
    assert sorted(hs["torch"]) == sorted(hs["jax"]) == linears
    for n in linears:
        a, b = hs["torch"][n], hs["jax"][n]
        assert a.dtype == np.float64 and a.shape == (spec.shapes(cfg)[n][1],) * 2
        assert np.allclose(a, a.T) and np.all(np.linalg.eigvalsh(a) > -1e-6 * np.abs(a).max())
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max(), n


def test_gptq_is_refused_before_training_for_a_backend_without_the_hook(shakespeare_dir, tmp_path, monkeypatch):
    from golfbench.harness import runner
    from golfbench.harness.backend import get_backend

    class NoHook:
        def __getattr__(self, item):
            if item == "input_hessians":
                raise AttributeError(item)
            return getattr(get_backend("torch"), item)

    monkeypatch.setattr(runner, "get_backend", lambda name: NoHook())
    data = small_dataset(shakespeare_dir, tmp_path / "data")
    spec = runner.RunSpec("fixed-data", "dev", "torch", "llama", "tiny", data=str(data), out=str(tmp_path / "runs"))
    spec.budget, spec.codec = 8192, "gptq_int6"
    with pytest.raises(GolfError, match="codec 'gptq_int6' needs per-layer input Hessians"):
        runner.Run(spec)
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------------------------------------
# end to end


def test_cli_refuses_unknown_codec_and_compressor_in_one_line(tmp_path):
    line = one_line_error(golf("run", *RUN_ARGS, "--codec", "int4", "--out", tmp_path), "unknown codec 'int4'")
    assert "int8_per_row, int6_per_row, gptq_int6" in line
    line = one_line_error(golf("run", *RUN_ARGS, "--compressor", "gzip", "--out", tmp_path), "unknown compressor")
    assert "zstd-22, lzma, brotli" in line
    assert not tmp_path.joinpath("fixed-data").exists()


@pytest.mark.slow
def test_gptq_brotli_run_records_codec_and_calibration_and_verifies(shakespeare_dir, tmp_path):
    data = small_dataset(shakespeare_dir, tmp_path / "data")
    out = tmp_path / "runs"
    # mlp_mult=6: the MLP matrices (768x128) pass the 65,536-element threshold, so GPTQ has work to do
    args = ("--data", data, "--budget", "8192", "--set", "mlp_mult=6", "--out", out, "--run-id", "g")
    golf_ok("run", *RUN_ARGS, *args, "--codec", "gptq_int6", "--compressor", "brotli")
    d = out / "fixed-data" / "dev" / "g"
    result = json.loads((d / "result.json").read_text())
    assert result["status"] == "ok" and result["codec"] == "gptq_int6" and result["compressor"] == "brotli"
    assert result["calibration_tokens"] == 32 * 256  # min(64, 8192 // 256) sequences re-read from the start
    assert 0 < result["calibration_seconds"] < result["train_seconds"]
    assert result["train_tokens"] == 8192  # calibration tokens are not training tokens
    fpt = json.loads((d / "run.json").read_text())["flops_per_token"]["total"]
    assert result["calibration_flops"] == pytest.approx(fpt / 3 * 8192)
    assert result["train_flops"] == pytest.approx(fpt * 8192 + fpt / 3 * 8192)
    manifest = json.loads((d / "run.json").read_text())
    assert (manifest["codec"], manifest["compressor"]) == ("gptq_int6", "brotli")
    blob = (d / "artifact.golf").read_bytes()
    assert blob[:4] == b"GBr1" and art.describe(blob) == {"codec": "gptq_int6", "compressor": "brotli"}
    codecs = {e.name: e.codec for e in art.entries(blob)}
    assert codecs["blocks.0.mlp.fc.weight"] == "int6_gptq" and codecs["tok_emb.weight"] == "int6_row"
    res = golf_ok("verify", d)
    assert "checks passed" in res.stdout
    inspect = golf_ok("artifact", "inspect", d / "artifact.golf")
    assert "codec gptq_int6" in inspect.stdout and "compressor brotli" in inspect.stdout
    assert "int6_gptq" in inspect.stdout
    # verify re-derives the codec from the artifact and the calibration charge from the log
    for edit, check in (
        ({"codec": "int6_per_row"}, "artifact-codec"),
        ({"calibration_seconds": 0.0}, "calibration-claim"),
    ):
        copy = tmp_path / check
        shutil.copytree(d, copy)
        (copy / "result.json").write_text(json.dumps({**result, **edit}))
        res = golf("verify", copy)
        failed = [line[5:].split(":", 1)[0] for line in res.stderr.splitlines() if line.startswith("FAIL ")]
        assert res.returncode == 1 and check in failed, res.stderr


def test_the_loop_leaves_the_calibration_reserve_free():
    from golfbench.harness.tracks import Budget

    flops = Budget("flops", 100.0)
    flops.charge(1.0, 10, 50.0)
    assert flops.fits(10, 30.0, reserve=20.0) and not flops.fits(10, 30.0, reserve=20.5)
    clock = Budget("seconds", 10.0)
    clock.charge(2.0, 10, 1.0)  # a step starts while 2 s spent + reserve < 10
    assert clock.fits(10, 1.0, reserve=7.9) and not clock.fits(10, 1.0, reserve=8.0)
    tokens = Budget("tokens", 100.0)
    tokens.charge(1.0, 50, 1.0)  # fixed-data calibration re-reads trained tokens: nothing to reserve
    assert tokens.fits(50, 1.0, reserve=1e9)


@pytest.mark.slow
def test_codec_bench_records_every_pair(shakespeare_dir, tmp_path):
    import subprocess
    import sys

    from golf_helpers import ENV, ROOT

    data = small_dataset(shakespeare_dir, tmp_path / "data")
    out = tmp_path / "codecs.json"
    cmd = [sys.executable, "bench/codecs.py", "--data", data, "--budget", "4096", "--variants", "llama/tiny"]
    res = subprocess.run([*map(str, cmd), "--out", str(out)], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (variant,) = json.loads(out.read_text())["variants"]
    pairs = {(p["codec"], p["compressor"]): p for p in variant["pairs"]}
    assert sorted(pairs) == sorted((c, z) for c in art.CODECS for z in art.COMPRESSORS)
    assert all(p["bytes"] == p["model_bytes"] + variant["code_bytes"] for p in pairs.values())
    assert variant["calibration_tokens"] == 16 * 256 and variant["hessians"] == 24
    for codec in art.CODECS:  # the compressor never changes the weights
        assert len({pairs[codec, z]["val_bpb"] for z in art.COMPRESSORS}) == 1
