"""Model plugins (harness/plugins.py, docs/plugins.md): discovery through the ``golfbench.models`` entry
point group, `golf models`, broken plugins, a one-framework model refused cleanly by the other backend, and
(slow) the plugin model through run, verify, compare, leaderboard and export."""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

import pytest
from golf_helpers import golf, golf_ok, one_line_error, small_dataset

from golfbench.harness import plugins
from golfbench.harness.errors import GolfError
from golfbench.harness.models import BUILTIN_SPECS, SPECS, get_spec

pytest.importorskip("golf_deltanet", reason="install examples/golf-deltanet (make setup does)")


@pytest.fixture
def fresh_discovery():
    plugins.discover.cache_clear()
    plugins._WARNINGS.clear()
    yield
    plugins.discover.cache_clear()
    plugins._WARNINGS.clear()


def test_the_example_plugin_is_discovered_with_its_package():
    found = plugins.discover()
    assert "deltanet" in found and found["deltanet"].source == "golf-deltanet"
    assert found["deltanet"].implementations == {"jax": "golf_deltanet.deltanet_jax:DeltaNetLM"}
    assert "deltanet" in SPECS and get_spec("deltanet") is found["deltanet"].spec
    assert list(SPECS)[: len(BUILTIN_SPECS)] == list(BUILTIN_SPECS)  # built-ins first, as before
    assert plugins.source_of("llama") == "golfbench" and plugins.source_of("deltanet") == "golf-deltanet"
    assert plugins.get_plugin("llama") is None


def _fake_entry_points(*extra):
    real = metadata.entry_points

    def entry_points(**kw):
        eps = list(real(**kw))
        return eps + list(extra) if kw.get("group") == plugins.GROUP else eps

    return entry_points


def test_a_broken_plugin_is_one_warning_and_never_a_crash(monkeypatch, capsys, fresh_discovery):
    broken = metadata.EntryPoint("broken", "no_such_golf_module:PLUGIN", plugins.GROUP)
    taken = metadata.EntryPoint("shadow", "golf_deltanet.spec:PLUGIN", plugins.GROUP)  # deltanet twice
    monkeypatch.setattr(metadata, "entry_points", _fake_entry_points(broken, taken))
    found = plugins.discover()
    assert set(found) == {"deltanet"} and found["deltanet"].source == "golf-deltanet"
    warned = plugins.load_warnings()
    assert len(warned) == 2
    assert "'broken'" in warned[0] and "no_such_golf_module" in warned[0] and "ModuleNotFoundError" in warned[0]
    assert "'shadow'" in warned[1] and "golf-deltanet's" in warned[1]
    err = capsys.readouterr().err
    assert err.count("warning:") == 2 and len(err.strip().splitlines()) == 2
    assert {"llama", "megalodon", "deltanet"} <= set(SPECS)


def test_a_plugin_may_not_take_a_builtin_name(monkeypatch, fresh_discovery):
    import dataclasses

    from golf_deltanet.spec import PLUGIN

    fake = dataclasses.replace(PLUGIN, spec=dataclasses.replace(PLUGIN.spec, name="llama"))
    monkeypatch.setattr("golf_deltanet.spec.FAKE", fake, raising=False)
    ep = metadata.EntryPoint("evil", "golf_deltanet.spec:FAKE", plugins.GROUP)
    monkeypatch.setattr(metadata, "entry_points", _fake_entry_points(ep))
    plugins.discover()
    assert get_spec("llama") is BUILTIN_SPECS["llama"]
    assert any("'evil'" in w and "golfbench's" in w for w in plugins.load_warnings())


def test_golf_models_lists_the_plugin_and_its_package():
    res = golf_ok("models", "--json")
    rows = json.loads(res.stdout)
    mine = [r for r in rows if r["model"] == "deltanet"]
    assert {r["preset"] for r in mine} == {"tiny", "golf16"}
    assert all(r["package"] == "golf-deltanet" and r["frameworks"] == ["jax"] for r in mine)
    assert all(r["package"] == "golfbench" for r in rows if r["model"] in ("llama", "megalodon"))
    table = golf_ok("models").stdout
    assert "deltanet" in table and "golf-deltanet" in table


def test_golf_models_survives_a_broken_installed_plugin(tmp_path):
    """A real installed distribution whose entry point cannot import: one warning naming it, exit 0."""
    info = tmp_path / "broken_golf_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-golf-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[golfbench.models]\nbroken = broken_golf_plugin.nowhere:PLUGIN\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    res = golf("models", env=env)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "broken-golf-plugin" in warnings[0] and warnings[0].startswith("warning:")
    assert "llama" in res.stdout and "deltanet" in res.stdout


def test_jax_backend_lists_the_plugin_and_counts_its_files():
    from golfbench.backends.jax.backend import BACKEND, CODE_LAYOUT

    assert BACKEND.models()[:2] == ["llama", "megalodon"] and "deltanet" in BACKEND.models()
    files = BACKEND.code_files("deltanet")
    assert [f.name for f in files] == [*CODE_LAYOUT.shared, "spec.py", "deltanet_jax.py"]
    assert files[-1].parent == Path(plugins.get_plugin("deltanet").root) and all(f.is_file() for f in files)


def test_torch_refuses_a_jax_only_plugin_model_in_one_line(shakespeare_dir, tmp_path):
    from golfbench.backends.torch.backend import BACKEND

    assert "deltanet" not in BACKEND.models()
    with pytest.raises(GolfError, match="not implemented in torch"):
        BACKEND.code_files("deltanet")
    res = golf("run", "--backend", "torch", "--model", "deltanet", "--data", shakespeare_dir, "--out", tmp_path)
    line = one_line_error(res, "deltanet", "not implemented in torch", "golf-deltanet")
    assert "implements jax" in line
    assert not any(tmp_path.iterdir())  # refused before any directory was written


@pytest.mark.slow
def test_plugin_model_runs_verifies_compares_ranks_and_exports(shakespeare_dir, tmp_path):
    data = small_dataset(shakespeare_dir, tmp_path / "data", train_tokens=16_384)
    out = tmp_path / "runs"
    budget = "8192"
    golf_ok(
        "compare",
        "deltanet@jax",
        "llama@torch",
        "--track",
        "fixed-data",
        "--scale",
        "dev",
        "--seeds",
        "1",
        "--data",
        data,
        "--budget",
        budget,
        "--eval-stride",
        "256",
        "--out",
        out,
    )
    run_dir = out / "fixed-data" / "dev" / f"deltanet-tiny-jax-s0-b{budget}"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok" and result["model"] == "deltanet" and result["backend"] == "jax"
    assert json.loads((run_dir / "run.json").read_text())["model_package"] == {
        "name": "golf-deltanet",
        "version": "0.1.0",
    }
    assert sorted(p.name for p in (run_dir / "code").iterdir()) == sorted(
        ["__init__.py", "backend.py", "runtime.py", "optim.py", "layers.py", "spec.py", "deltanet_jax.py"]
    )
    report = json.loads((out / "fixed-data" / "dev" / "compare.json").read_text())
    assert "deltanet/tiny@jax" in json.dumps(report) and "llama/tiny@torch" in json.dumps(report)

    verdict = golf_ok("verify", run_dir, "--data", data)
    assert "deltanet" in verdict.stdout or (run_dir / "verify.json").exists()
    refused = golf("verify", run_dir, "--data", data, "--backend", "torch")
    assert refused.returncode != 0 and "not implemented in torch" in refused.stdout + refused.stderr

    board = golf_ok("leaderboard", "--runs", out, "--format", "json", "--include-unofficial")
    assert "deltanet" in board.stdout and "llama" in board.stdout

    records = tmp_path / "records"
    golf_ok("export", run_dir, "--out", records)
    assert (records / "submission.json").exists()
    golf_ok("validate-submission", records)
