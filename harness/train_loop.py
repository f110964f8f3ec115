"""The budgeted training loop of one run: one host sync per step, the next batch prepared while a step runs.

Per step k, on every process:

1. ``backend.train_step`` queues step k (on a GPU it returns before the step has run; its loss stays on the device);
2. the batch of step k+1 is read from the stream and prepared (``backend.prepare_batch``: sliced, converted, pinned,
   copied without blocking) while step k runs;
3. process 0 reads its clock, charges step k's seconds (the time since its previous reading) and decides whether
   step k+1 starts and at which learning-rate scale;
4. ONE collective (``Collective.step_sync``) carries process 0's decision, lr scale and seconds to every process and
   reads the step's loss, summed over processes: the step's only host sync.

The wallclock rule is parameter-golf's: a step starts while the clock is inside the limit and may finish after it;
the time until the last step's loss is read (its completion on the device) is added to it once after the loop,
so ``train_seconds`` can read 600.04 (tracks/wallclock-10min.toml). Val-curve points and checkpoints are off the
clock. Everything that must agree across processes comes from process 0 (docs/architecture.md, "Processes").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from golfbench.harness import progress
from golfbench.harness.distributed import Collective
from golfbench.harness.records import EventLog, read_events
from golfbench.harness.tracks import Budget, lr_scale


@dataclass
class LoopResult:
    """How the loop ended: ``status`` ok | diverged, its ``reason`` (None when ok), the state after the last step,
    the last loss (nats, NaN when no step ran) and the lr scale the last step ran at."""

    state: object
    status: str = "ok"
    reason: str | None = None
    last_loss: float = math.nan
    last_scale: float = 1.0


def _step_event(budget: Budget, loss: float, scale: float) -> dict:
    return {
        "step": budget.steps,
        "time": budget.seconds,
        "step_seconds": budget.last_step_seconds(),
        "tokens": budget.tokens,
        "flops": budget.flops,
        "loss": loss,
        "lr_scale": scale,
    }


def train(
    run,
    state,
    budget: Budget,
    stream,
    coll: Collective,
    events: EventLog,
    curve,
    clock: Callable[[], float],
    reserve: float,
    plan: list[int] | None,
    checkpoint_every: int,
    save_checkpoint: Callable[[object, int], None],
) -> LoopResult:
    """Train ``state`` until process 0 says the next step does not fit ``budget`` (or the loss is not finite).

    ``run``: the runner's Run (backend, spec, seq_len, batch_seqs, flops_per_token, config, limit); ``stream``: the
    BatchStream (its shards' token ids checked once, on load); ``curve``: the run's val curve (``due()``,
    ``point(state)``); ``clock``: this process's clock in seconds (only process 0's readings count); ``reserve``:
    budget left for work charged after the loop (GPTQ calibration); ``plan``: rows per step on the fixed-data track
    (None elsewhere: full batches); ``save_checkpoint(state, stream_tokens)`` every ``checkpoint_every`` steps (0:
    never). Events go to ``events`` on process 0. The stream is left just after the last batch trained on.
    """
    backend, spec, main = run.backend, run.spec, coll.rank == 0
    fpt, seq = run.flops_per_token["total"], run.seq_len
    warmdown = float(run.config.get("warmdown_frac", 0.2))
    out = LoopResult(state)
    last_logged = _last_logged_step(events) if main and budget.steps else 0

    def rows_for(step: int) -> int:  # rows of the step after `step` steps were taken (0: none left)
        if plan is None:
            return run.batch_seqs
        return plan[step] if step < len(plan) else 0

    def decide(rows: int) -> list[float]:  # process 0: does a step of `rows` start, and at which lr scale
        fits = rows > 0 and budget.fits(rows * seq, fpt * rows * seq, reserve)
        # the warm-down ends where the loop must stop (the reserve is for calibration after it)
        return [1.0 if fits else 0.0, lr_scale(budget.progress(reserve), warmdown)]

    ran = 0
    with progress.bar(f"train {spec.model}/{spec.preset}@{spec.backend}", total=run.limit) as update:
        update(budget.spent())
        go, scale = coll.broadcast(decide(rows_for(budget.steps)))
        mark = clock()  # process 0's last charged reading; anything that touches training data counts
        rows = rows_for(budget.steps)
        batch = backend.prepare_batch(out.state, stream.next(rows)) if go else None
        while go:
            out.state, metrics = backend.train_step(out.state, batch, float(scale))
            out.last_scale, ran = float(scale), ran + 1
            ahead = rows_for(budget.steps + 1)
            batch = backend.prepare_batch(out.state, stream.next(ahead)) if ahead else None  # overlaps the step
            now = clock()
            tokens = rows * seq
            control = [0.0, 0.0, 0.0]
            if main:  # charge step k, then decide whether step k+1 starts
                budget.charge(now - mark, tokens, fpt * tokens)
                control = [*decide(ahead), now - mark]
            (go, scale, seconds), out.last_loss = coll.step_sync(control, metrics["loss"])
            if not main:
                budget.charge(float(seconds), tokens, fpt * tokens)
            mark, rows = now, ahead
            finite = math.isfinite(out.last_loss)
            step = budget.steps
            if main and ((go and (step % spec.log_every == 0 or step == 1)) or not finite):
                events.append(_step_event(budget, out.last_loss, out.last_scale))
                last_logged = step
            update(budget.spent(), loss=f"{out.last_loss:.3f}", step=step)
            if not finite:  # the loss is reduced over processes: every process stops here
                out.status, out.reason = "diverged", f"training loss became {out.last_loss} at step {step}"
                break
            paused = clock()
            if go and curve.due():  # off the clock
                curve.point(out.state)
            if go and checkpoint_every and step % checkpoint_every == 0:
                save_checkpoint(out.state, stream.tokens_consumed - (ahead * seq if batch is not None else 0))
            mark += clock() - paused
        if batch is not None:  # prepared ahead, never trained on
            stream.rewind(rows)
        if ran:  # the last step's completion on the device (read in its sync) is charged to it
            budget.extend_last(float(coll.broadcast([clock() - mark])[0]))
    if main and out.status == "ok" and budget.steps and last_logged != budget.steps:
        events.append(_step_event(budget, out.last_loss, out.last_scale))
    return out


def _last_logged_step(events: EventLog) -> int:
    """The last training step already in events.jsonl (a resumed run continues after its checkpoint)."""
    steps = [e["step"] for e in read_events(events.path) if "loss" in e and e.get("event") is None]
    return max(steps, default=0)
