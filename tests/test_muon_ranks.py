"""Torch Muon under torch.distributed keeps and updates the momentum of only the matrices a rank owns (matrix i
belongs to rank i % world, as in parameter-golf's train_gpt.py), and its results do not change for it.

- In process: ranks are threads with a stand-in ``_world`` and stand-in ``all_reduce`` / ``all_gather`` (a shared
  slot per rank and a barrier, summed in rank order). Each rank's state holds exactly its share of the momenta;
  its weights equal a single-process Muon's bit for bit and the float64 oracle of tests/test_muon_oracle.py to its
  tolerance; ``full_state_dict`` gathers the complete state; ``load_state_dict`` keeps a rank's share on any world.
- Real processes (slow): llama/tiny and megalodon/tiny on 1 process and on 2 under torchrun
  (tests/muon_ranks_script.py) give the per-step losses, final weights and checkpointed momenta that the code
  before this change gave (commit 58b99bc, where every rank updated every momentum), and a resume from the
  checkpoint reproduces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from golf_helpers import ENV, ROOT
from test_muon_oracle import LR, MOMENTA, STEPS, UPDATE_RTOL, oracle_muon, problem

torch = pytest.importorskip("torch")
from golfbench.backends.torch import muon  # noqa: E402

# two param groups (the ownership index runs over both); tall, wide and square matrices
SHAPES = [[(48, 32), (24, 40), (16, 16)], [(32, 24), (8, 40)]]
FLAT = [s for group in SHAPES for s in group]


class StandInGroup:
    """torch.distributed for ``world`` threads: rank from a thread-local, collectives through shared slots."""

    def __init__(self, world: int):
        self.world = world
        self.local = threading.local()
        self.slots: list = [None] * world
        self.barrier = threading.Barrier(world, timeout=60)
        self.calls = {"all_reduce": 0, "all_gather": 0}

    def rank_world(self) -> tuple[int, int]:
        return self.local.rank, self.world

    def _exchange(self, t: torch.Tensor) -> list[torch.Tensor]:
        self.slots[self.local.rank] = t.clone()
        self.barrier.wait()
        got = list(self.slots)
        self.barrier.wait()
        return got

    def all_reduce(self, t, op=None):
        assert op == torch.distributed.ReduceOp.SUM
        self.calls["all_reduce"] += self.local.rank == 0
        got = self._exchange(t)
        total = got[0].clone()
        for part in got[1:]:
            total += part
        t.copy_(total)

    def all_gather(self, parts, t):
        self.calls["all_gather"] += self.local.rank == 0
        for dst, src in zip(parts, self._exchange(t), strict=True):
            dst.copy_(src)

    def run(self, fn):
        """fn(rank) on every rank at once; their results in rank order (a failure on any rank is raised)."""
        out: list = [None] * self.world
        errors: list = []

        def body(r):
            self.local.rank = r
            try:
                out[r] = fn(r)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
                self.barrier.abort()

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return out


def make_muon(weights: list[np.ndarray]) -> tuple[muon.Muon, list[torch.nn.Parameter]]:
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in weights]
    groups = [{"params": params[:3]}, {"params": params[3:]}]
    return muon.Muon(groups, lr=LR, momentum=MOMENTA[0], backend_steps=STEPS), params


def muon_step(opt: muon.Muon, params, grads: list[np.ndarray], mu: float) -> None:
    for group in opt.param_groups:
        group["momentum"] = mu  # what the backend's before_update does each step
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.from_numpy(g.copy())
    opt.step()


@pytest.fixture
def problems():
    return [problem(shape, seed=10 + i) for i, shape in enumerate(FLAT)]  # [(w0, [grad step 0, grad step 1])]


@pytest.mark.parametrize("world", [2, 3])
def test_each_rank_keeps_only_its_momenta_and_updates_match(world, problems, monkeypatch):
    group = StandInGroup(world)
    monkeypatch.setattr(muon, "_world", group.rank_world)
    monkeypatch.setattr(muon.dist, "all_reduce", group.all_reduce)
    monkeypatch.setattr(muon.dist, "all_gather", group.all_gather)
    w0 = [w for w, _ in problems]

    single, single_params = make_muon(w0)  # one process: the state every rank kept before
    monkeypatch.setattr(muon, "_world", lambda: (0, 1))
    single_weights = []
    for step, mu in enumerate(MOMENTA):
        muon_step(single, single_params, [g[step] for _, g in problems], mu)
        single_weights.append([p.detach().clone() for p in single_params])
    monkeypatch.setattr(muon, "_world", group.rank_world)
    assert group.calls["all_reduce"] == 0

    def rank_run(r):
        opt, params = make_muon(w0)
        weights = []
        for step, mu in enumerate(MOMENTA):
            muon_step(opt, params, [g[step] for _, g in problems], mu)
            weights.append([p.detach().clone() for p in params])
        return opt, params, weights

    ranks = group.run(rank_run)
    assert group.calls == {"all_reduce": 2 * len(MOMENTA), "all_gather": 0}  # one per param group and step
    oracle = [oracle_muon(w, g) for w, g in problems]
    for r, (opt, params, weights) in enumerate(ranks):
        mine = [i for i in range(len(FLAT)) if i % world == r]
        assert sorted(opt.state_dict()["state"]) == mine, f"rank {r} holds momenta of other ranks' matrices"
        assert {id(p) for p in opt.state} == {id(params[i]) for i in mine}
        for step in range(len(MOMENTA)):
            for i, shape in enumerate(FLAT):
                assert torch.equal(weights[step][i], single_weights[step][i]), (r, step, shape)
                expected = oracle[i][step][1]
                np.testing.assert_allclose(
                    weights[step][i].numpy(), expected, rtol=0, atol=UPDATE_RTOL * np.abs(expected).max()
                )
        for i in mine:  # the momentum itself: b = mu_1 (g_0) + g_1, float64, to fp32 rounding
            g = problems[i][1]
            expected = MOMENTA[1] * g[0].astype(np.float64) + g[1]
            got = opt.state[params[i]]["momentum_buffer"].numpy()
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(expected).max())

    # the gathered state is what the single process holds, bit for bit, on every rank
    fulls = group.run(lambda r: ranks[r][0].full_state_dict())
    assert group.calls["all_gather"] == 1
    want = single.state_dict()
    for full in fulls:
        assert sorted(full["state"]) == sorted(want["state"]) == list(range(len(FLAT)))
        for i in want["state"]:
            assert torch.equal(full["state"][i]["momentum_buffer"], want["state"][i]["momentum_buffer"])
        assert full["param_groups"] == want["param_groups"]

    # loading the complete state keeps each rank's share, on this world size and another
    for other in (world, 5 - world):
        for r in range(other):
            monkeypatch.setattr(muon, "_world", lambda r=r, other=other: (r, other))
            opt, params = make_muon(w0)
            opt.load_state_dict(want)
            assert sorted(opt.state_dict()["state"]) == [i for i in range(len(FLAT)) if i % other == r]
            for i in opt.state_dict()["state"]:
                assert torch.equal(opt.state[params[i]]["momentum_buffer"], want["state"][i]["momentum_buffer"])


def test_full_state_before_the_first_step_is_empty(problems, monkeypatch):
    group = StandInGroup(2)
    monkeypatch.setattr(muon, "_world", group.rank_world)
    monkeypatch.setattr(muon.dist, "all_gather", group.all_gather)
    full = group.run(lambda r: make_muon([w for w, _ in problems])[0].full_state_dict())
    assert [f["state"] for f in full] == [{}, {}]


# Produced by tests/muon_ranks_script.py on the code before this change (commit 58b99bc), where every rank kept and
# updated every momentum: per-step losses, sha256 of the final weights and of the checkpointed Muon momenta.
OLD = {
    1: {
        "llama": (
            [6.9336981773376465, 8.069422721862793, 8.796061515808105, 8.785346984863281],
            "dee205ba33025c924f2ab4d28be49c13b934abb9a1e76c0eec9a63b081a83eac",
            "8ba9ba82a94cfea2789c6e4182581a0a4f8aaf82da04d1ae45f1710626b81847",
        ),
        "megalodon": (
            [7.609672546386719, 7.543985843658447, 7.548945426940918, 7.4966325759887695],
            "ac4821e6d4bccda4acc94a275a3b5a01c6a4bfd4fe0284236b9465faace009dd",
            "9dbe828f5f16638377502af590c2bca09ccc974175816fc9f98a2dd0375de77f",
        ),
    },
    2: {
        "llama": (
            [6.933697700500488, 8.069421768188477, 8.796062469482422, 8.785346984863281],
            "9719439a2a8ec78397652b24efbb74371076c3987daeb0440730b6665dec0ef8",
            "249fef639cc66aa8c3c66439611c31db9fd99677f08c799098ac2b446ef23653",
        ),
        "megalodon": (
            [7.609672546386719, 7.543985843658447, 7.548945426940918, 7.496633529663086],
            "22b6feef220bde069e9e6ca3bd6bd66cb64003d6473af52dde35478161374d11",
            "ab15c06359a401f6185785da83cb57a285edddd2b0db40a23f97e350dfb231d2",
        ),
    },
}
MATRICES = {"llama": 24, "megalodon": 16}  # Muon matrices of the tiny presets


@pytest.mark.slow
def test_one_and_two_processes_give_the_old_bits_and_resume_exactly(tmp_path):
    script = str(ROOT / "tests" / "muon_ranks_script.py")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    for cmd in ([sys.executable, script, tmp_path], [*torchrun, script, tmp_path, "1"]):
        res = subprocess.run(list(map(str, cmd)), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
    for world in (1, 2):
        reports = [json.loads((tmp_path / f"rank{r}-w{world}.json").read_text()) for r in range(world)]
        for model, (losses, weights, momenta) in OLD[world].items():
            n = MATRICES[model]
            for r, report in enumerate(reports):
                e = report[model]
                assert e["losses"] == losses, (world, model, r)  # exact floats
                assert e["weights"] == weights
                mine = [i for i in range(n) if i % world == r]
                assert e["held"] == e["resumed_held"] == [mine], (world, model, r)
                assert e["resumed_losses"] == losses[2:] and e["resumed_weights"] == weights  # bit-exact resume
                if world == 2:  # the 1-process checkpoint loaded on 2 processes: this rank's share, same bits
                    assert e["loaded"] == [{str(i): True for i in mine}]
            assert reports[0][model]["file_momenta"] == [list(range(n))]  # the checkpoint holds every momentum
            assert reports[0][model]["file_momenta_sha"] == [momenta]
