"""Typed model configs and the one recipe declaration (harness/models.py).

- ModelConfig / TrainRecipe: presets are frozen dataclass instances; ``--set`` values are parsed by the
  field's type (bools only true/false, ints never from 2.5, floats from 1e-3); unknown keys name the valid
  ones; the flat config and its hash are exactly those of before the split (frozen below).
- Artifacts store the ModelConfig only and are scored with the preset's recipe; old artifacts (whole config)
  still load.
- The optimizer groups reproduce, tensor by tensor, the assignment the backends used before it was declared
  once (frozen below from the old rules: torch llama by ``ndim == 2 and not control``, JAX llama by its matrix
  suffixes, both megalodons by their Muon suffixes), and both backends build their optimizers from them.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from golfbench.harness.artifact import pack
from golfbench.harness.cli import _parse_sets
from golfbench.harness.errors import GolfError
from golfbench.harness.init import init_weights
from golfbench.harness.models import (
    SPECS,
    GroupRule,
    LlamaConfig,
    LlamaRecipe,
    MegalodonConfig,
    MegalodonRecipe,
    ModelConfig,
    Preset,
    TrainRecipe,
    get_spec,
)
from golfbench.harness.runner import config_hash
from golfbench.harness.scoring import load_artifact_model

LLAMA, MEGA = get_spec("llama"), get_spec("megalodon")
PRESETS = [(s.name, p) for s in SPECS.values() for p in s.presets]

# ---------------------------------------------------------------------------------------------------------
# The flat configs as they were before the split (harness/models.py at 08051f3), and their config hashes.

OLD_LLAMA = dict(
    vocab_size=1024,
    num_layers=9,
    model_dim=512,
    num_heads=8,
    num_kv_heads=4,
    mlp_mult=2,
    seq_len=1024,
    rope_base=10000.0,
    logit_softcap=30.0,
    qk_gain_init=1.5,
    tied_embed_init_std=0.005,
    loops=1,
    train_batch_tokens=524_288,
    matrix_lr=0.04,
    scalar_lr=0.04,
    tied_embed_lr=0.05,
    muon_momentum=0.95,
    muon_momentum_warmup_start=0.85,
    muon_momentum_warmup_steps=500,
    muon_backend_steps=5,
    beta1=0.9,
    beta2=0.95,
    adam_eps=1e-8,
    warmdown_frac=0.2,
)
OLD_MEGA = dict(
    vocab_size=1024,
    num_layers=4,
    model_dim=512,
    num_heads=2,
    z_dim=128,
    value_dim=1024,
    ffn_hidden_dim=1280,
    cema_ndim=16,
    chunk_size=256,
    norm_num_groups=32,
    swiglu=True,
    tied_embeddings=True,
    seq_len=1024,
    rope_base=10000.0,
    norm_eps=1e-5,
    loops=1,
    train_batch_tokens=524_288,
    matrix_lr=0.02,
    adam_lr=3e-3,
    muon_momentum=0.95,
    muon_backend_steps=5,
    beta1=0.9,
    beta2=0.98,
    adam_eps=1e-8,
    weight_decay=0.0,
    grad_clip=1.0,
    warmdown_frac=0.2,
)
OLD = {
    ("llama", "baseline"): (OLD_LLAMA, "a44f2696c08120eb"),
    ("llama", "tiny"): (
        {
            **OLD_LLAMA,
            **dict(
                num_layers=4,
                model_dim=128,
                num_heads=4,
                num_kv_heads=2,
                seq_len=256,
                train_batch_tokens=4096,
                muon_momentum_warmup_steps=50,
            ),
        },
        "5bbd0eeee9f0b495",
    ),
    ("megalodon", "golf16"): (OLD_MEGA, "05e3f1daef9d7bce"),
    ("megalodon", "tiny"): (
        {
            **OLD_MEGA,
            **dict(
                num_layers=2,
                model_dim=128,
                num_heads=2,
                z_dim=64,
                value_dim=128,
                ffn_hidden_dim=256,
                cema_ndim=8,
                chunk_size=64,
                norm_num_groups=8,
                seq_len=256,
                train_batch_tokens=4096,
            ),
        },
        "405d88213b2a5e97",
    ),
}


@pytest.mark.parametrize("model, preset", sorted(OLD))
def test_flat_config_and_hash_are_unchanged(model, preset):
    old, digest = OLD[(model, preset)]
    cfg = get_spec(model).config(preset)
    assert cfg == old and list(cfg) == list(old)  # same keys, values and order
    assert {k: type(v) for k, v in cfg.items()} == {k: type(v) for k, v in old.items()}
    assert config_hash(cfg) == digest


@pytest.mark.parametrize("model, preset", PRESETS)
def test_presets_are_frozen_pairs_of_the_spec_dataclasses(model, preset):
    spec = get_spec(model)
    p = spec.presets[preset]
    assert isinstance(p, Preset) and type(p.model) is spec.model_cls and type(p.recipe) is spec.recipe_cls
    assert issubclass(spec.model_cls, ModelConfig) and issubclass(spec.recipe_cls, TrainRecipe)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.model.num_layers = 1
    cfg = spec.config(preset)
    assert not set(spec.model_keys) & set(spec.recipe_keys)
    assert list(cfg) == [*spec.model_keys, *spec.recipe_keys]
    assert spec.model_config(cfg) == p.model and spec.recipe(cfg) == p.recipe
    assert spec.model_part(cfg) == dataclasses.asdict(p.model) and set(spec.model_part(cfg)) == set(spec.model_keys)


def test_model_and_recipe_fields_are_where_the_issue_puts_them():
    assert {
        "vocab_size",
        "num_layers",
        "model_dim",
        "num_heads",
        "seq_len",
        "rope_base",
        "logit_softcap",
        "qk_gain_init",
        "tied_embed_init_std",
        "loops",
    } <= set(LLAMA.model_keys)
    assert {
        "train_batch_tokens",
        "matrix_lr",
        "scalar_lr",
        "tied_embed_lr",
        "warmdown_frac",
        "muon_momentum",
        "muon_backend_steps",
        "beta1",
        "beta2",
        "adam_eps",
    } <= set(LLAMA.recipe_keys)
    assert {"swiglu", "tied_embeddings", "norm_eps", "chunk_size"} <= set(MEGA.model_keys)
    assert {"adam_lr", "grad_clip", "weight_decay", "train_batch_tokens"} <= set(MEGA.recipe_keys)
    assert LlamaConfig().num_layers == 9 and LlamaRecipe().matrix_lr == 0.04
    assert MegalodonConfig().swiglu is True and MegalodonRecipe().beta2 == 0.98


# ---------------------------------------------------------------------------------------------------------
# --set parsing by field type


def sets(*items: str) -> dict:
    return _parse_sets(list(items))


@pytest.mark.parametrize(
    "text, expected",
    [("False", False), ("false", False), ("FALSE", False), ("True", True), ("true", True), ("tRuE", True)],
)
def test_bools_accept_only_true_and_false(text, expected):
    cfg = MEGA.config("tiny", sets(f"tied_embeddings={text}", f"swiglu={text}"))
    assert cfg["tied_embeddings"] is expected and cfg["swiglu"] is expected
    shapes = MEGA.shapes(cfg)
    assert ("lm_head.weight" in shapes) is (not expected) and ("layers.0.ffn.w3.weight" in shapes) is expected


@pytest.mark.parametrize("text", ["1", "0", "yes", "no", "", "1.0", "[true]"])
def test_bools_refuse_everything_else(text):
    with pytest.raises(GolfError, match=r"config key 'swiglu' of model 'megalodon' must be bool \(true or false\)"):
        MEGA.config("tiny", sets(f"swiglu={text}"))


def test_ints_refuse_fractions_and_bools():
    for bad in (
        sets("num_layers=2.5"),
        {"num_layers": "2.5"},
        {"num_layers": 2.5},
        {"num_layers": 2.0},
        sets("num_layers=true"),
        {"num_layers": "two"},
    ):
        with pytest.raises(GolfError, match=r"config key 'num_layers' of model 'llama' must be int, got"):
            LLAMA.config("tiny", bad)
    assert LLAMA.config("tiny", sets("num_layers=6"))["num_layers"] == 6
    assert LLAMA.config("tiny", {"num_layers": "6"})["num_layers"] == 6
    assert LLAMA.config("tiny", {"num_layers": np.int64(6)})["num_layers"] == 6
    assert type(LLAMA.config("tiny", {"num_layers": np.int64(6)})["num_layers"]) is int


def test_floats_accept_numbers_and_numeric_text():
    assert LLAMA.config("tiny", sets("matrix_lr=1e-3"))["matrix_lr"] == 0.001
    assert LLAMA.config("tiny", sets("matrix_lr=.04"))["matrix_lr"] == 0.04
    assert LLAMA.config("tiny", {"matrix_lr": "1E-3"})["matrix_lr"] == 0.001
    base = LLAMA.config("tiny", sets("rope_base=20000"))["rope_base"]
    assert base == 20000.0 and type(base) is float
    for bad in ("nan", "inf", "lr", "true"):
        with pytest.raises(
            GolfError, match=r"config key 'matrix_lr' of model 'llama' must be float \(a finite number\)"
        ):
            LLAMA.config("tiny", sets(f"matrix_lr={bad}"))


def test_unknown_keys_and_bad_items_are_one_line_errors():
    with pytest.raises(GolfError) as info:
        LLAMA.config("tiny", {"num_layer": 3})
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("unknown config key 'num_layer' for model 'llama': valid keys are ")
    assert msg.split("valid keys are ")[1].split(", ") == [*LLAMA.model_keys, *LLAMA.recipe_keys]
    with pytest.raises(GolfError, match="must look like key=value"):
        sets("num_layers")
    with pytest.raises(GolfError, match="must look like key=value"):
        sets("=3")
    with pytest.raises(GolfError, match="unknown preset 'huge'"):
        LLAMA.config("huge")
    with pytest.raises(GolfError, match="unknown config key 'warmdown'"):
        LLAMA.presets["tiny"].replace(warmdown=0.5)
    assert LLAMA.presets["tiny"].replace(warmdown_frac=0.5).recipe.warmdown_frac == 0.5


def test_architecture_checks_still_apply():
    with pytest.raises(GolfError, match="model_dim must divide by num_heads"):
        LLAMA.config("tiny", {"num_heads": 5})
    with pytest.raises(GolfError, match="seq_len must be a multiple of chunk_size"):
        MEGA.config("tiny", {"seq_len": 100})


def test_config_hash_covers_model_and_recipe():
    base = config_hash(LLAMA.config("tiny"))
    assert config_hash(LLAMA.config("tiny", {"matrix_lr": 0.03})) != base
    assert config_hash(LLAMA.config("tiny", {"qk_gain_init": 1.0})) != base
    assert config_hash(LLAMA.config("tiny", {"matrix_lr": "0.04"})) == base  # the same value, however written


# ---------------------------------------------------------------------------------------------------------
# artifacts: the model part only


def artifact(spec, preset: str, config: dict, stored: dict) -> bytes:
    weights = init_weights(spec, config, 0)
    return pack(weights, spec.is_control, {"model": spec.name, "preset": preset, "config": stored, "backend": "torch"})


def test_artifact_is_scored_with_its_model_part_and_the_presets_recipe():
    cfg = LLAMA.config(
        "tiny",
        {
            "num_layers": 2,
            "model_dim": 64,
            "num_heads": 2,
            "num_kv_heads": 1,
            "train_batch_tokens": 1024,
            "matrix_lr": 0.01,
        },
    )
    part = LLAMA.model_part(cfg)
    assert set(part) == set(LLAMA.model_keys) and part["num_layers"] == 2 and "matrix_lr" not in part
    loaded = load_artifact_model(artifact(LLAMA, "tiny", cfg, part))
    # the architecture comes from the artifact, the recipe from the preset (scoring needs none)
    assert LLAMA.model_part(loaded.config) == part
    assert LLAMA.recipe(loaded.config) == LLAMA.presets["tiny"].recipe
    assert loaded.config["train_batch_tokens"] == 4096 and loaded.config["matrix_lr"] == 0.04


def test_old_artifacts_with_the_whole_config_still_load():
    cfg = MEGA.config("tiny", {"num_layers": 1, "swiglu": False, "tied_embeddings": False, "adam_lr": 1e-2})
    loaded = load_artifact_model(artifact(MEGA, "tiny", cfg, cfg))  # recipe keys in the stored config: ignored
    assert MEGA.model_part(loaded.config) == MEGA.model_part(cfg) and loaded.config["adam_lr"] == 3e-3
    assert loaded.config["swiglu"] is False and loaded.config["tied_embeddings"] is False


def test_artifact_configs_are_checked_like_overrides():
    cfg = LLAMA.config("tiny")
    for stored, match in [
        ({**LLAMA.model_part(cfg), "evil": 1}, "unknown config key 'evil'"),
        ({**LLAMA.model_part(cfg), "num_layers": 2.5}, "must be int, got"),
    ]:
        with pytest.raises(GolfError, match=match):
            load_artifact_model(artifact(LLAMA, "tiny", cfg, stored))


def test_golf_models_json_lists_every_preset():
    from typer.testing import CliRunner

    from golfbench.harness.cli import app

    res = CliRunner().invoke(app, ["models", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [(r["model"], r["preset"]) for r in rows] == PRESETS
    for row in rows:
        spec = get_spec(row["model"])
        cfg = spec.config(row["preset"])
        assert row["params"] == spec.param_count(cfg) and row["config"] == spec.model_part(cfg)
        assert row["recipe"] == {k: cfg[k] for k in spec.recipe_keys}


# ---------------------------------------------------------------------------------------------------------
# the recipe declaration: groups, control tensors, momentum
#
# Today's assignment, frozen from the rules the backends used before the declaration (each rule's output was
# computed on every preset below and agreed between torch and JAX): per-layer name lists, top-level names.

LLAMA_MATRICES = [
    "attn.c_q.weight",
    "attn.c_k.weight",
    "attn.c_v.weight",
    "attn.proj.weight",
    "mlp.fc.weight",
    "mlp.proj.weight",
]
LLAMA_SCALARS = ["attn_scale", "mlp_scale", "resid_mix", "attn.q_gain"]
MEGA_MATRICES = ["wz.weight", "wv.weight", "wr.weight", "wh1.weight", "wh2.weight", "ffn.w1.weight", "ffn.w2.weight"]
MEGA_CONTROL = [
    "tsnorm.weight",
    "tsnorm.bias",
    "cema.alpha",
    "cema.delta",
    "cema.theta",
    "cema.gamma",
    "cema.omega",
    "rmsnorm.weight",
    "qk_gamma",
    "qk_beta",
    "ffn_norm.weight",
    "ffn_norm.bias",
]
MEGA_BIASES = ["wz.bias", "wv.bias", "wr.bias", "wh1.bias"]


def per_layer(prefix: str, layers: int, names: list[str]) -> set[str]:
    return {f"{prefix}.{i}.{n}" for i in range(layers) for n in names}


def today(model: str, cfg: dict) -> tuple[dict[tuple[str, str], set[str]], set[str]]:
    """{(optimizer, lr key): tensors} and the control tensors, as the pre-declaration rules assigned them."""
    L = cfg["num_layers"]
    if model == "llama":
        scalars = {"skip_weights"} | per_layer("blocks", L, LLAMA_SCALARS)
        return {
            ("adam", "tied_embed_lr"): {"tok_emb.weight"},
            ("muon", "matrix_lr"): per_layer("blocks", L, LLAMA_MATRICES),
            ("adam", "scalar_lr"): scalars,
        }, scalars
    matrices = MEGA_MATRICES + (["ffn.w3.weight"] if cfg["swiglu"] else [])
    control = per_layer("layers", L, MEGA_CONTROL) | {"final_norm.weight", "final_norm.bias"}
    rest = (
        control
        | per_layer("layers", L, MEGA_BIASES)
        | {"embed.weight"}
        | ({"lm_head.weight"} if not cfg["tied_embeddings"] else set())
    )
    return {("muon", "matrix_lr"): per_layer("layers", L, matrices), ("adam", "adam_lr"): rest}, control


# counts of the frozen assignment, as printed by the old rules: {(optimizer, lr key): n}, n control tensors
TODAY_COUNTS = {
    ("llama", "tiny", ()): ({("adam", "tied_embed_lr"): 1, ("muon", "matrix_lr"): 24, ("adam", "scalar_lr"): 17}, 17),
    ("llama", "baseline", ()): (
        {("adam", "tied_embed_lr"): 1, ("muon", "matrix_lr"): 54, ("adam", "scalar_lr"): 37},
        37,
    ),
    ("megalodon", "tiny", ()): ({("muon", "matrix_lr"): 16, ("adam", "adam_lr"): 35}, 26),
    ("megalodon", "golf16", ()): ({("muon", "matrix_lr"): 32, ("adam", "adam_lr"): 67}, 50),
    ("megalodon", "tiny", (("swiglu", False), ("tied_embeddings", False))): (
        {("muon", "matrix_lr"): 14, ("adam", "adam_lr"): 36},
        26,
    ),
}


@pytest.mark.parametrize("model, preset, overrides", sorted(TODAY_COUNTS), ids=lambda x: str(x))
def test_groups_reproduce_todays_assignment(model, preset, overrides):
    spec = get_spec(model)
    cfg = spec.config(preset, dict(overrides))
    groups = spec.optimizer_groups(cfg)
    got = {(g.optimizer, g.lr_key): set(g.tensors) for g in groups}
    expected, control = today(model, cfg)
    assert got == expected
    counts, n_control = TODAY_COUNTS[(model, preset, overrides)]
    assert {k: len(v) for k, v in got.items()} == counts
    assert [(g.optimizer, g.lr_key) for g in groups] == list(counts)  # the optimizers' order (checkpoints zip it)
    assert set(spec.control_tensors(cfg)) == control and len(control) == n_control
    assert {n for n in spec.shapes(cfg) if spec.is_control(n)} == control


@pytest.mark.parametrize("model, preset", PRESETS)
@pytest.mark.parametrize("overrides", [{}, {"num_layers": 3}], ids=["preset", "3-layers"])
def test_every_tensor_is_in_exactly_one_group(model, preset, overrides):
    spec = get_spec(model)
    cfg = spec.config(preset, overrides)
    shapes = spec.shapes(cfg)
    groups = spec.optimizer_groups(cfg)
    names = [n for g in groups for n in g.tensors]
    assert len(names) == len(set(names)) and set(names) == set(shapes)
    for g in groups:
        assert g.optimizer in ("muon", "adam") and g.lr_key in spec.recipe_keys and g.tensors
        assert list(g.tensors) == [n for n in shapes if n in set(g.tensors)]  # canonical order
        if g.optimizer == "muon":
            assert all(len(shapes[n]) == 2 and not spec.is_control(n) for n in g.tensors)


def test_group_rules_must_cover_each_tensor_once():
    cfg = LLAMA.config("tiny")
    rules = LLAMA.group_rules
    missing = dataclasses.replace(LLAMA, group_rules=rules[1:])
    with pytest.raises(GolfError, match=r"tensor 'tok_emb.weight' is in no optimizer group"):
        missing.optimizer_groups(cfg)
    twice = dataclasses.replace(LLAMA, group_rules=(*rules, GroupRule("extra", "adam", "scalar_lr", ("skip_weights",))))
    with pytest.raises(GolfError, match=r"tensor 'skip_weights' is in several optimizer groups \(scalars, extra\)"):
        twice.optimizer_groups(cfg)
    vector = dataclasses.replace(LLAMA, group_rules=(GroupRule("all", "muon", "matrix_lr", ("*",)),))
    with pytest.raises(GolfError, match="Muon takes 2-D matrices only"):
        vector.optimizer_groups(cfg)


def test_momentum_schedules():
    llama = LLAMA.momentum_schedule(LLAMA.config("tiny"))  # 0.85 -> 0.95 over 50 steps
    np.testing.assert_allclose(
        [llama.at(s) for s in (0, 10, 25, 50, 51, 1000)], [0.85, 0.87, 0.90, 0.95, 0.95, 0.95], rtol=1e-15
    )
    mega = MEGA.momentum_schedule(MEGA.config("tiny", {"muon_momentum": 0.9}))
    assert [mega.at(s) for s in (0, 1, 100)] == [0.9, 0.9, 0.9]


# ---------------------------------------------------------------------------------------------------------
# both backends build their optimizers from the groups

MICRO = {
    "llama": dict(vocab_size=64, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2, seq_len=16),
    "megalodon": dict(
        vocab_size=61,
        num_layers=2,
        model_dim=24,
        num_heads=2,
        z_dim=12,
        value_dim=16,
        ffn_hidden_dim=40,
        cema_ndim=4,
        chunk_size=8,
        norm_num_groups=4,
        seq_len=24,
        tied_embeddings=False,
    ),
}


@pytest.mark.parametrize("model", sorted(MICRO))
def test_torch_optimizers_follow_the_groups(model):
    pytest.importorskip("torch")
    from golfbench.backends.torch.backend import BACKEND
    from golfbench.backends.torch.muon import Muon

    spec = get_spec(model)
    cfg = spec.config("tiny", MICRO[model])
    state = BACKEND.init(model, cfg, 0)
    names = {id(p): n for n, p in state.model.named_parameters()}
    groups = spec.optimizer_groups(cfg)
    assert len(state.optimizers) == len(groups)
    for opt, group in zip(state.optimizers, groups, strict=True):
        (pg,) = opt.param_groups
        assert {names[id(p)] for p in pg["params"]} == set(group.tensors)
        assert isinstance(opt, Muon) is (group.optimizer == "muon")
        assert pg["lr"] == pg["base_lr"] == cfg[group.lr_key]


@pytest.mark.parametrize("model", sorted(MICRO))
def test_jax_recipe_follows_the_groups(model):
    pytest.importorskip("jax")
    from golfbench.backends.jax.backend import BACKEND

    spec = get_spec(model)
    cfg = spec.config("tiny", MICRO[model])
    recipe = BACKEND.init(model, cfg, 0).trainer.recipe
    expected = {n: (g.optimizer, float(cfg[g.lr_key])) for g in spec.optimizer_groups(cfg) for n in g.tensors}
    assert {n: (recipe.labels[n], recipe.lrs[n]) for n in recipe.labels} == expected


# ---------------------------------------------------------------------------------------------------------
# end to end: `golf run` packs the model part only, `golf verify` accepts it


def test_run_artifact_holds_the_model_part_and_verifies(shakespeare_dir, tmp_path):
    from golf_helpers import golf, small_dataset

    from golfbench.harness.artifact import unpack

    data = small_dataset(shakespeare_dir, tmp_path / "shakespeare_sp1024", train_tokens=8192)
    micro = [
        "num_layers=2",
        "model_dim=64",
        "num_heads=2",
        "num_kv_heads=1",
        "train_batch_tokens=1024",
        "matrix_lr=2e-2",
    ]
    res = golf(
        "run",
        "--track",
        "fixed-data",
        "--model",
        "llama",
        "--preset",
        "tiny",
        "--data",
        data,
        "--budget",
        2048,
        "--eval-stride",
        "256",
        *[a for kv in micro for a in ("--set", kv)],
        "--out",
        tmp_path / "runs",
        "--run-id",
        "c0",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "runs" / "fixed-data" / "dev" / "c0"
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["config"]["matrix_lr"] == 0.02 and manifest["config"]["train_batch_tokens"] == 1024
    assert json.loads(res.stdout)["config_sha256"] == config_hash(manifest["config"])
    _, meta = unpack((run_dir / "artifact.golf").read_bytes())
    assert meta["config"] == LLAMA.model_part(manifest["config"])  # no training recipe in the artifact
    ver = golf("verify", run_dir, "--data", data)
    assert ver.returncode == 0 and "recomputed" in ver.stdout, ver.stdout + ver.stderr
