"""Training: Single-Attn, Looped-Attn and SHIFT, written checkpoint by checkpoint to a run file.

The loop is plain AdamW on the token-mean cross-entropy. Every ``eval_every`` steps it
records loss and accuracy on each evaluation split of the task (simple / complex / all
for Markov, per test length for algorithmic tasks), the mean training loss, training
token accuracy (of each batch before its update) and gradient norm since the last
evaluation, the training FLOPs so far (counted from the architecture, so that they
compare across machines: :func:`landscape.train.model.forward_flops`), the learning rate, the
training wall-clock (seconds spent in optimiser steps, evaluations excluded) and
throughput. Every ``checkpoint_every`` steps it appends the flat parameters to the
trajectory and commits everything buffered, with the full resume state, to the run file
in one atomic step (see ``store.py``). Each checkpoint also records AdamW's second moment
(``exp_avg_sq``) and step count, so probes can compute the Adam-preconditioned sharpness
at that checkpoint.

Per-step windows (``train.window_steps`` steps from each of ``train.window_at``): every
optimiser step inside one also records its parameter update (float32, after minus before),
its batch's training loss and its learning rate, buffered and appended to
``/windows/start_<S>`` by the same commit as the next checkpoint
(:mod:`landscape.runfile.windows`), so a killed and resumed run stores the same window.

Determinism: on CPU, the same recipe and seed give bit-identical metrics and
checkpoints (wall-clock and throughput aside), with or without interruptions: a resumed
run restores the model, the optimiser, the batch-order generator and the loop state
exactly as they were at its last commit.

Several processes (``torchrun``, see :mod:`landscape.train.distributed`): every rank draws the
same batch order and takes a contiguous share of each global batch; its share's token-mean
loss, weighted by ``world * (share tokens / batch tokens)``, is differentiated under
DistributedDataParallel, whose gradient average is then the gradient of the token mean
over the whole global batch, as one process computes it (clipping sees that global
gradient). Evaluations are sharded and their sums all-reduced. Rank 0 alone writes the run
file; every rank resumes from it. Against one process the trajectory differs only by
rounding (measured in ``tests/train/test_distributed.py``).
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from landscape.curvature.objective import ParamLayout
from landscape.curvature.stability import OptimizerRecord
from landscape.errors import LandscapeError
from landscape.runfile import interventions, store, validate, windows
from landscape.train import distributed
from landscape.train.model import LoopedTransformer, forward_flops, token_loss
from landscape.train.recipe import Recipe, WindowPlan, stored_recipe, windows_of
from landscape.train.tasks import IGNORE, Split, TaskData, generate
from landscape.train.tasks.algorithmic import online_batch

if TYPE_CHECKING:
    from landscape.train.distributed import Ranks

Progress = Callable[[int, int, dict], None]


def evaluate(model: torch.nn.Module, split: Split, batch: int = 256) -> dict[str, float]:
    """Token-mean loss, token accuracy and whole-sequence accuracy on ``split``."""
    return metrics_from_sums(evaluation_sums(model, split, batch))


@torch.no_grad()
def evaluation_sums(model: torch.nn.Module, split: Split, batch: int = 256) -> torch.Tensor:
    """``[5]`` float64 sums over ``split`` (they add up over shards of it).

    Loss summed over scored tokens, correct tokens, scored tokens, fully correct sequences,
    sequences with a scored token.
    """
    loss_sum, right, scored, seq_right = 0.0, 0, 0, 0
    for i in range(0, len(split), batch):
        x = split.inputs[i : i + batch]
        y = split.targets[i : i + batch]
        logits = model(x, sizes=None if split.sizes is None else split.sizes[i : i + batch])
        mask = y != IGNORE
        n = int(mask.sum())
        loss_sum += float(token_loss(logits, y, reduction="sum"))  # 0 with no scored token
        hit = (logits.argmax(-1) == y) & mask
        right += int(hit.sum())
        scored += n
        seq_right += int(((hit | ~mask).all(dim=1) & mask.any(dim=1)).sum())
    n_seq = int((split.targets != IGNORE).any(dim=1).sum())
    return torch.tensor([loss_sum, right, scored, seq_right, n_seq], dtype=torch.float64)


METRICS = ("loss", "acc", "seq_acc")
"""The metrics :func:`evaluate` reports per split."""


def metrics_from_sums(sums: torch.Tensor) -> dict[str, float]:
    """The metrics of :func:`evaluate` from :func:`evaluation_sums`."""
    loss_sum, right, scored, seq_right, n_seq = sums.tolist()
    return {"loss": loss_sum / max(scored, 1), "acc": right / max(scored, 1),
            "seq_acc": seq_right / max(n_seq, 1)}


@dataclass
class ShiftState:
    """What the SHIFT criterion remembers between evaluations."""

    losses: list[float] = field(default_factory=list)  # training loss at each evaluation
    accs: list[float] = field(default_factory=list)  # training token accuracy at each one
    streak: int = 0  # evaluations in a row at which both conditions held
    fired: bool = False
    last: dict = field(default_factory=dict)  # the criterion's values at the last evaluation
    reason: str = ""  # why the switch fired: "criterion", "cap" or "fixed"


@dataclass
class LoopState:
    """Everything besides model and optimiser needed to resume bit-identically."""

    step: int = 0
    perm: torch.Tensor | None = None  # batch order of the current epoch
    batch: int = 0  # next batch index in the current epoch
    loops: int = 1
    wall: float = 0.0  # seconds spent in optimiser steps so far
    tokens: int = 0  # training tokens processed so far
    flops: int = 0  # training FLOPs so far, counted from the architecture (model.forward_flops)
    loss_sum: float = 0.0  # sums since the last evaluation
    gnorm_sum: float = 0.0
    right_since: int = 0  # correctly predicted training tokens since the last evaluation
    scored_since: int = 0  # scored training tokens since the last evaluation
    n_since: int = 0
    wall_since: float = 0.0
    tokens_since: int = 0
    shift: ShiftState = field(default_factory=ShiftState)
    stopped: bool = False  # ended early: train.stop_acc reached (the run is complete)


class Trainer:
    """One training run: model, optimiser, data and the loop, writing to ``path``.

    Args:
        recipe: what to train.
        path: the run file (created by :meth:`start`, continued by :meth:`resume`).
        data: the task's data (generated from ``recipe.task`` when None).
        ranks: the process group when several processes train together (each global batch
            shared out, rank 0 writes); None for one process.
    """

    def __init__(self, recipe: Recipe, path: str | Path, data: TaskData | None = None,
                 ranks: Ranks | None = None):
        self.recipe, self.path, self.ranks = recipe, Path(path), ranks
        tc = recipe.train
        self.device = torch.device(tc.device) if ranks is None else ranks.device
        if ranks is not None and tc.batch_size % ranks.world:
            raise LandscapeError(f"train.batch_size={tc.batch_size} does not divide by the "
                                 f"{ranks.world} ranks; choose a multiple of {ranks.world}")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise LandscapeError("train.device is cuda but no CUDA device is available")
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.data = data if data is not None else generate(recipe.task)
        self._check_shift_split()
        self.steps_per_epoch = max(1, len(self.data.train) // tc.batch_size)
        self.total = tc.steps or tc.epochs * self.steps_per_epoch
        self.eval_every = tc.eval_every or self.steps_per_epoch
        self.ckpt_every = tc.checkpoint_every or self.steps_per_epoch
        torch.manual_seed(tc.seed)
        self.model = LoopedTransformer(recipe.model, self.data.vocab_size, self.data.max_len)
        self.model.to(self.device)
        self.net = self.model if ranks is None else ranks.data_parallel(self.model)
        self.layout = ParamLayout.of(self.model)
        self.optimizer = self._new_optimizer()
        self.gen = torch.Generator().manual_seed(tc.seed + 1)
        self.state = LoopState(loops=1 if recipe.shift.enabled else recipe.model.loops)
        self.model.loops = self.state.loops
        self.train_x = self.data.train.inputs.to(self.device)
        self.train_y = self.data.train.targets.to(self.device)
        self.train_sizes = (None if self.data.train.sizes is None
                            else self.data.train.sizes.to(self.device))
        self.evals = {k: s.to(self.device) for k, s in self.data.evals.items()}
        self._check_split_names()
        self.windows = windows_of(tc, self.total)
        for s in tc.intervene_at:
            if s >= self.total:
                raise LandscapeError(f"train.intervene_at: step {s} is not below the run's "
                                     f"{self.total} steps; choose steps in 0..{self.total - 1}")
        self.update_projection: Callable[[torch.Tensor], torch.Tensor] | None = None
        """Applied to each step's update (after minus before, flat float32) when set:
        the parameters become ``before + update_projection(update)`` (an intervention,
        :mod:`landscape.train.intervention`; never set in a recorded run)."""
        self._pending = self._nothing_pending()

    @staticmethod
    def _nothing_pending() -> dict:
        """What a commit writes, empty: checkpoints, metric rows, events, window rows."""
        return {"ckpt": [], "metrics": [], "events": [], "window": {}, "intervene": []}

    def _check_split_names(self) -> None:
        """train.stop_split and train.monitor_splits must name evaluation splits."""
        tc = self.recipe.train
        names = [*tc.monitor_splits, *([tc.stop_split] if tc.stop_acc else [])]
        for name in names:
            if name not in self.evals:
                raise LandscapeError(f"train: split {name!r} is not an evaluation split of "
                                     f"{self.data.name} (splits: {', '.join(self.evals)})")
        if tc.stop_acc and tc.monitor_splits and tc.stop_split not in tc.monitor_splits:
            raise LandscapeError(f"train.stop_split={tc.stop_split!r} must be one of "
                                 f"train.monitor_splits {list(tc.monitor_splits)}")

    def _check_shift_split(self) -> None:
        sc = self.recipe.shift
        if sc.enabled and sc.criterion == "oracle" and sc.split and sc.split not in self.data.evals:
            raise LandscapeError(
                f"shift.split={sc.split!r} is not an evaluation split of task "
                f"{self.data.name} (splits: {', '.join(self.data.evals)}); set shift.split"
            )

    def _new_optimizer(self) -> torch.optim.Optimizer:
        tc = self.recipe.train
        return torch.optim.AdamW(self.model.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2),
                                 weight_decay=tc.weight_decay)

    # --- file lifecycle -----------------------------------------------------------------

    def probe_ids(self) -> np.ndarray:
        """The training sequences of the fixed probe set (seeded, sorted)."""
        g = torch.Generator().manual_seed(self.recipe.train.seed + 2)
        n = min(self.recipe.train.probe_size, len(self.data.train))
        return np.sort(torch.randperm(len(self.data.train), generator=g)[:n].numpy())

    @property
    def writes(self) -> bool:
        """Whether this process writes the run file (one process, or rank 0)."""
        return self.ranks is None or self.ranks.is_main

    def _note_ranks(self) -> None:
        if self.ranks is not None:
            self._pending["events"].append({"kind": "data_parallel", "step": self.state.step,
                                            "world": self.ranks.world,
                                            "backend": self.ranks.backend})

    def start(self) -> None:
        """Create the run file with step 0 (evaluation, checkpoint, resume state) in it."""
        for plan in self.windows:  # a window the budget cuts says so from the start
            if plan.steps < plan.requested:
                self._pending["events"].append(
                    {"kind": "window_cut", "step": plan.start, "planned": plan.steps,
                     "requested": plan.requested, "total_steps": self.total})
        self._record_eval()
        self._checkpoint()
        self._note_ranks()
        if not self.writes:
            self._pending = self._nothing_pending()
            return
        ids = self.probe_ids()
        ceilings = self.data.ceilings
        store.create_run(
            self.path,
            attrs={"recipe": self.recipe.to_json(), "versions": store.software_versions(),
                   "optimizers": [{"from": 0, **OptimizerRecord.of(self.optimizer).to_json()}],
                   "arch": self.recipe.arch, "total_steps": self.total,
                   "steps_per_epoch": self.steps_per_epoch},
            task_attrs={"name": self.data.name, "vocab_size": self.data.vocab_size,
                        "max_len": self.data.max_len, "info": self.data.info,
                        "ceilings": ceilings, "splits": list(self.data.evals)},
            task_arrays=dict(self.data.sample_info),
            layout=self.layout.to_json(),
            probe_set={"ids": ids, "inputs": self.data.train.inputs[ids].numpy(),
                       "targets": self.data.train.targets[ids].numpy()},
            then=self._pending_change(),
        )
        self._pending = self._nothing_pending()

    def resume(self) -> None:
        """Restore the state of the last commit of an existing run file."""
        found = store.read_resume(self.path)
        if found is None:
            raise LandscapeError(f"{self.path} has no resume state; start a new run instead")
        saved = validate.load_resume_state(self.path, found[1], map_location=self.device)
        self.restore(saved)
        self._pending["events"].append({"kind": "resume", "step": self.state.step})
        self._note_ranks()

    def restore(self, saved: dict) -> None:
        """Model, loop state, optimiser and batch generator from a loaded state blob."""
        try:
            self.model.load_state_dict(saved["model"])
            loop = dict(saved["loop"])
            loop["shift"] = ShiftState(**loop["shift"])
            self.state = LoopState(**loop)
            self.model.loops = self.state.loops
            self.optimizer.load_state_dict(saved["optimizer"])
            self.gen.set_state(saved["gen"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise validate.damaged(self.path, f"/resume/state does not fit the recipe's "
                                      f"model and optimiser ({type(e).__name__}: "
                                      f"{str(e)[:200]})") from None

    def _resume_blob(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "gen": self.gen.get_state(), "loop": dataclasses.asdict(self.state)}, buf)
        return buf.getvalue()

    def _commit(self, final: bool = False) -> None:
        if self.writes:
            store.commit(self.path, self._pending_change(final))
        self._pending = self._nothing_pending()

    def _pending_change(self, final: bool = False) -> Callable[[store.Transaction], None]:
        """The file change that records everything pending and the resume state."""
        pending, blob, step = self._pending, self._resume_blob(), self.state.step

        def change(tx: store.Transaction) -> None:
            if pending["ckpt"]:
                tx.append("trajectory/step", np.array([c[0] for c in pending["ckpt"]]))
                tx.append("trajectory/loops", np.array([c[1] for c in pending["ckpt"]]))
                tx.append("trajectory/params", np.stack([c[2] for c in pending["ckpt"]]))
                tx.append("trajectory/adam_v", np.stack([c[3] for c in pending["ckpt"]]))
                tx.append("trajectory/adam_step", np.array([c[4] for c in pending["ckpt"]]))
            for key in pending["metrics"][0] if pending["metrics"] else ():
                tx.append(f"metrics/{key}", np.array([r[key] for r in pending["metrics"]]))
            for plan in self.windows:
                windows.append_rows(tx, plan.start, plan.requested, plan.steps,
                                    pending["window"].get(plan.start, []))
            for found in pending["intervene"]:
                interventions.put(tx, found)
            tx.append_json("events", pending["events"])
            tx.put("resume", {"state": np.frombuffer(blob, dtype=np.uint8)}, {"step": step})
            if final:
                tx.set_attrs({"status": "complete", "throughput": self._throughput()})

        return change

    def _throughput(self) -> float:
        return self.state.tokens / self.state.wall if self.state.wall > 0 else float("nan")

    # --- the loop -----------------------------------------------------------------------

    def run(self, progress: Progress | None = None) -> None:
        """Train from the current state to the end of the budget, committing as it goes."""
        st = self.state
        while st.step < self.total and not st.stopped:
            if st.step in self.recipe.train.intervene_at and self.writes:
                self._pending["intervene"].append(self.intervention_state())
            loss = self._train_step()
            if progress is not None:
                progress(st.step, self.total, {"loss": loss, "loops": st.loops,
                                               "tok/s": self._throughput()})
            if st.step % self.eval_every == 0 or st.step == self.total:
                self._record_eval()
            due = st.step % self.ckpt_every == 0 or st.step == self.total or st.stopped
            if due:
                self._checkpoint()
            if self._shift_due():
                if not due:
                    self._checkpoint()
                self._switch()
                due = True
            if due:
                self._commit(final=st.step == self.total or st.stopped)

    def _next_batch(self) -> Split:
        """The step's batch: the epoch order's next slice, or a fresh draw (``task.online``).

        An online batch is a function of the step alone (resumes see the same batches).
        """
        st, bs = self.state, self.recipe.train.batch_size
        if getattr(self.recipe.task, "online", False):
            return online_batch(self.recipe.task, st.step, bs).to(self.device)
        if st.perm is None or st.batch >= self.steps_per_epoch:
            st.perm, st.batch = torch.randperm(len(self.data.train), generator=self.gen), 0
        idx = st.perm[st.batch * bs : (st.batch + 1) * bs].to(self.device)
        st.batch += 1
        return Split(self.train_x[idx], self.train_y[idx],
                     None if self.train_sizes is None else self.train_sizes[idx])

    def _train_step(self) -> float:
        st, tc = self.state, self.recipe.train
        batch = self._next_batch()
        t0 = time.perf_counter()
        lr = self.recipe.lr_at(st.step, self.total)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        loss, value, n_tok, right = self._batch_loss(batch)
        if not math.isfinite(value):
            raise LandscapeError(
                f"training loss became {value} at step {st.step} (lr {lr:g}); the run "
                f"file keeps everything up to its last checkpoint; lower train.lr"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = tc.grad_clip if tc.grad_clip > 0 else float("inf")
        gnorm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        plan = self._window_at(st.step)
        project = self.update_projection
        before = self._flat_params() if plan is not None or project is not None else None
        self.optimizer.step()
        if project is not None:
            self._set_flat(before + project(self._flat_params() - before))
        dt = time.perf_counter() - t0
        if plan is not None:  # outside the timed step: the copies are bookkeeping
            update = (self._flat_params() - before).cpu().numpy()
            self._pending["window"].setdefault(plan.start, []).append(
                (st.step, update, value, lr, st.loops))
        st.step += 1
        st.wall += dt
        st.flops += self._step_flops(batch)
        st.tokens += n_tok
        st.loss_sum += value
        st.gnorm_sum += gnorm
        st.n_since += 1
        st.wall_since += dt
        st.tokens_since += n_tok
        st.right_since += right
        st.scored_since += n_tok
        return value

    def _window_at(self, step: int) -> WindowPlan | None:
        """The window that records optimiser step ``step`` (None: none, or not rank 0)."""
        if not self.writes:
            return None
        for plan in self.windows:
            if plan.start <= step < plan.start + plan.steps:
                return plan
        return None

    def _flat_params(self) -> torch.Tensor:
        """The model's parameters as one float32 vector (layout order, a copy)."""
        with torch.no_grad():
            return self.layout.flatten(dict(self.model.named_parameters())).detach().float()

    def _set_flat(self, flat: torch.Tensor) -> None:
        """Set the model's parameters from one flat vector (layout order)."""
        values = self.layout.unflatten(flat)
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(values[name].to(dtype=p.dtype, device=p.device))

    def intervention_state(self) -> interventions.InterventionState:
        """The full state before the next step: resume blob, parameters, both moments."""
        params = dict(self.model.named_parameters())
        rows: dict[str, list] = {"exp_avg": [], "exp_avg_sq": []}
        steps = 0
        for name in self.layout.names:
            state = self.optimizer.state.get(params[name], {})
            for key, out in rows.items():
                t = state.get(key)
                out.append(torch.zeros(params[name].numel()) if t is None
                           else t.detach().reshape(-1).float().cpu())
            if "step" in state:
                steps = int(state["step"])
        return interventions.InterventionState(
            start=self.state.step, state=self._resume_blob(),
            params=self._flat_params().cpu().numpy(),
            exp_avg=torch.cat(rows["exp_avg"]).numpy(),
            exp_avg_sq=torch.cat(rows["exp_avg_sq"]).numpy(), adam_step=steps)

    def _step_flops(self, batch: Split) -> int:
        """FLOPs of the training step on ``batch``: 3 x forward, as the model runs it."""
        cfg = self.recipe.model
        if cfg.loop_rule == "size" and batch.sizes is not None:
            passes = int(cfg.passes(batch.sizes).max())
        else:
            passes = self.state.loops
        per_seq = forward_flops(cfg, self.data.vocab_size, batch.inputs.shape[1], passes)
        return 3 * len(batch) * per_seq

    def _batch_loss(self, batch: Split) -> tuple[torch.Tensor, float, int, int]:
        """The loss to differentiate, the token-mean loss, scored tokens and right predictions.

        Right predictions: the argmax of the logits before this step's update. With several
        ranks, this rank's contiguous share of the batch, weighted by ``world * share tokens
        / batch tokens`` (DDP averages the gradients over ranks).
        """
        y = batch.targets  # every rank counts the batch's tokens (for its share)
        n_tok = int((y != IGNORE).sum())
        if self.ranks is None:
            logits = self.model(batch.inputs, sizes=batch.sizes)
            loss = token_loss(logits, y)
            return loss, loss.item(), n_tok, _right(logits, y)
        part = self.ranks.shard(len(batch))  # only this rank's rows are run
        xs, ys = batch.inputs[part], batch.targets[part]
        mine = int((ys != IGNORE).sum())
        share = mine / n_tok if n_tok else math.nan
        sizes = None if batch.sizes is None else batch.sizes[part]
        logits = self.net(xs, sizes=sizes)
        loss = token_loss(logits, ys) if mine else logits.sum() * 0.0
        both = torch.stack([loss.detach().double() * share,
                            torch.tensor(float(_right(logits, ys)), dtype=torch.float64,
                                         device=loss.device)])
        value, right = self.ranks.all_reduce_sum(both).tolist()
        return loss * (self.ranks.world * share), value, n_tok, int(round(right))

    def _evaluate(self, split: Split) -> dict[str, float]:
        if self.ranks is None:
            return evaluate(self.model, split)
        part = self.ranks.shard(len(split))
        sizes = None if split.sizes is None else split.sizes[part]
        sums = evaluation_sums(self.model, Split(split.inputs[part], split.targets[part], sizes))
        return metrics_from_sums(self.ranks.all_reduce_sum(sums))

    def _record_eval(self) -> None:
        st = self.state
        self.model.eval()
        n = st.n_since
        row = {"step": st.step, "epoch": st.step / self.steps_per_epoch, "wall": st.wall,
               "flops": float(st.flops),
               "lr": self.recipe.lr_at(max(st.step - 1, 0), self.total), "loops": st.loops,
               "train_loss": st.loss_sum / n if n else float("nan"),
               "train_acc": st.right_since / st.scored_since if st.scored_since else float("nan"),
               "grad_norm": st.gnorm_sum / n if n else float("nan"),
               "tokens_per_s": st.tokens_since / st.wall_since if st.wall_since else float("nan")}
        tc = self.recipe.train
        light = bool(tc.monitor_splits) and not (st.step % self.ckpt_every == 0
                                                 or st.step == self.total)
        self._evaluate_into(row, tc.monitor_splits if light else self.evals)
        if tc.stop_acc and self._mastered(row):
            st.stopped = True
            self._pending["events"].append(
                {"kind": "stop", "step": st.step, "split": tc.stop_split,
                 "acc": row[f"{tc.stop_split}.acc"], "stop_acc": tc.stop_acc})
            light = False
            self._evaluate_into(row, self.evals)
        if light:  # the other splits wait for the next checkpoint (NaN here)
            self._evaluate_into(row, [k for k in self.evals if k not in tc.monitor_splits],
                                skip=True)
        self._pending["metrics"].append(row)
        if n:
            st.shift.losses.append(row["train_loss"])
            st.shift.accs.append(row["train_acc"])
            self._update_shift_criterion(row)
        st.loss_sum = st.gnorm_sum = st.wall_since = 0.0
        st.n_since = st.tokens_since = st.right_since = st.scored_since = 0

    def _evaluate_into(self, row: dict, names, skip: bool = False) -> None:
        """``row[split.metric]`` for the splits ``names`` (NaN for each metric with skip)."""
        for name in names:
            if f"{name}.acc" in row:
                continue
            if skip:
                row.update({f"{name}.{k}": math.nan for k in METRICS})
                continue
            values = self._evaluate(self.evals[name])
            row.update({f"{name}.{k}": v for k, v in values.items()})

    def _mastered(self, row: dict) -> bool:
        """train.stop_acc reached on train.stop_split, with the curriculum complete."""
        task, tc = self.recipe.task, self.recipe.train
        if getattr(task, "curriculum_steps", 0) and \
                task.longest_at(self.state.step) < task.train_max_len:
            return False
        return row[f"{tc.stop_split}.acc"] >= tc.stop_acc

    def _checkpoint(self) -> None:
        if not self.writes:  # only rank 0 records the trajectory
            return
        params = dict(self.model.named_parameters())
        flat = self.layout.flatten(params).detach().float().cpu().numpy()
        v, adam_step = self._adam_second_moment(params)
        self._pending["ckpt"].append((self.state.step, self.state.loops, flat, v, adam_step))

    def _adam_second_moment(self, params: dict) -> tuple[np.ndarray, int]:
        """AdamW's ``exp_avg_sq`` as a flat float32 row and its step count (zeros before any)."""
        rows, steps = [], 0
        for name in self.layout.names:
            state = self.optimizer.state.get(params[name], {})
            if "exp_avg_sq" in state:
                rows.append(state["exp_avg_sq"].detach().reshape(-1).float().cpu())
                steps = int(state["step"])
            else:
                rows.append(torch.zeros(params[name].numel()))
        return torch.cat(rows).numpy(), steps

    # --- SHIFT --------------------------------------------------------------------------

    def _update_shift_criterion(self, row: dict) -> None:
        """One evaluation's step of the switch criterion (see :class:`ShiftConfig`).

        The default criterion reads only the training signals the state has collected;
        ``row`` (which also holds the evaluation splits' metrics) is read by the oracle
        variant alone.
        """
        sc, sh = self.recipe.shift, self.state.shift
        if not sc.enabled or sh.fired or sc.at_step:
            return
        signals = training_plateau(sh.losses, sh.accs, sc.window)
        if signals is None:
            return
        plateau = signals["improvement"] < sc.delta_1
        if sc.criterion == "training":
            second = signals["acc_rise"] < sc.delta_2
            values = signals
        else:
            second, acc, ceiling = self._oracle_mastered(row)
            values = {"improvement": signals["improvement"], "acc": acc, "ceiling": ceiling}
        sh.streak = sh.streak + 1 if plateau and second else 0
        sh.last = {**values, "streak": sh.streak}

    def _oracle_mastered(self, row: dict) -> tuple[bool, float, float]:
        """The oracle's condition (b): evaluation accuracy on ``split`` near its ceiling."""
        sc = self.recipe.shift
        if not sc.split or "acc" not in self.data.ceilings.get(sc.split, {}):
            return True, float("nan"), float("nan")
        acc, ceiling = row[f"{sc.split}.acc"], self.data.ceilings[sc.split]["acc"]
        return acc >= ceiling - sc.delta_2, acc, ceiling

    def _shift_due(self) -> bool:
        sc, st = self.recipe.shift, self.state
        if not sc.enabled or st.shift.fired or st.step >= self.total:
            return False
        if sc.at_step:
            st.shift.reason = "fixed"
            return st.step >= sc.at_step
        if st.shift.streak >= sc.patience:
            st.shift.reason = "criterion"
            return True
        st.shift.reason = "cap"
        return st.step >= math.ceil(sc.max_fraction * self.total)

    def _switch(self) -> None:
        sc, st = self.recipe.shift, self.state
        event = {"kind": "shift", "step": st.step, "epoch": st.step / self.steps_per_epoch,
                 "reason": st.shift.reason, "loops_before": st.loops, "loops_after": sc.loops_after,
                 "keep_optimizer": sc.keep_optimizer, "window": sc.window,
                 "delta_1": sc.delta_1, "delta_2": sc.delta_2, "patience": sc.patience,
                 "criterion": sc.criterion, **({"split": sc.split} if sc.criterion == "oracle"
                                               else {}), **st.shift.last}
        st.shift.fired = True
        st.loops = self.model.loops = sc.loops_after
        if not sc.keep_optimizer:
            self.optimizer = self._new_optimizer()
        self._pending["events"].append(event)


def _right(logits: torch.Tensor, targets: torch.Tensor) -> int:
    """Scored positions where the argmax of ``logits`` is the target."""
    return int(((logits.detach().argmax(-1) == targets) & (targets != IGNORE)).sum())


def training_plateau(losses: list[float], accs: list[float], window: int) -> dict | None:
    """The SHIFT criterion's training signals, from the per-evaluation training means.

    Args:
        losses: training loss (mean over the steps since the previous evaluation), one per
            evaluation so far.
        accs: training token accuracy, likewise.
        window: W, the evaluations averaged on each side.

    Returns:
        ``{"improvement", "acc_rise"}``: the relative drop of the mean loss over the last
        ``window`` evaluations against the ``window`` before, and the absolute rise of the
        mean accuracy likewise; None before ``2 * window`` evaluations.

    >>> training_plateau([2.0, 2.0, 1.0, 1.0], [0.5, 0.5, 0.75, 0.75], 2)
    {'improvement': 0.5, 'acc_rise': 0.25}
    """
    if len(losses) < 2 * window or len(accs) < 2 * window:
        return None
    now, before = float(np.mean(losses[-window:])), float(np.mean(losses[-2 * window : -window]))
    improvement = (before - now) / abs(before) if before else 0.0
    acc_rise = float(np.mean(accs[-window:]) - np.mean(accs[-2 * window : -window]))
    return {"improvement": improvement, "acc_rise": acc_rise}


def train(recipe: Recipe | None, out: str | Path, *, resume: bool = False,
          progress: Progress | None = None) -> Path:
    """Train ``recipe`` into the run file ``out`` (or continue it with ``resume=True``).

    Args:
        recipe: what to train. With ``resume=True`` it may be None (the file's recipe is
            used); if given it must equal the file's.
        out: the run file.
        resume: continue an interrupted run from its last commit.
        progress: called after every step with ``(step, total, info)``.

    Returns:
        The path of the run file.
    """
    out = Path(out)
    if distributed.launched():  # torchrun, several ranks
        return _train_ranks(recipe, out, resume, progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    with store.writer_lock(out, "training"):
        _trainer(recipe, out, resume).run(progress)
    return out


def _trainer(recipe: Recipe | None, out: Path, resume: bool,
             ranks: Ranks | None = None) -> Trainer:
    """A trainer resumed from ``out`` or started into it (the caller holds the lock)."""
    if resume:
        trainer = Trainer(_recipe_for_resume(out, recipe), out, ranks=ranks)
        trainer.resume()
        return trainer
    if recipe is None:
        raise LandscapeError("no recipe given")
    if out.exists():
        raise LandscapeError(f"{out} already exists; pass --resume to continue it "
                             "or choose another --out")
    trainer = Trainer(recipe, out, ranks=ranks)
    trainer.start()
    return trainer


def _train_ranks(recipe: Recipe | None, out: Path, resume: bool,
                 progress: Progress | None) -> Path:
    """:func:`train` on one rank of a torchrun job: rank 0 holds the lock and writes.

    Every rank checks the same file before rank 0 first writes to it (that needs the
    other ranks' first collective), so all raise the same errors.
    """
    device = _recipe_for_resume(out, recipe).train.device if resume else (
        recipe.train.device if recipe is not None else "cpu")

    def lock():
        out.parent.mkdir(parents=True, exist_ok=True)
        return store.writer_lock(out, f"training (rank 0 of {ranks.world})")

    with distributed.process_group(device) as ranks, ranks.main_only(lock):
        _trainer(recipe, out, resume, ranks).run(progress if ranks.is_main else None)
    return out


def _recipe_for_resume(out: Path, recipe: Recipe | None) -> Recipe:
    summary = store.read_summary(out)
    attrs = summary["attrs"]
    if attrs.get("status") == "complete":
        raise LandscapeError(f"{out} is already complete; nothing to resume")
    if "recipe" not in attrs:
        raise LandscapeError(f"{out} is a run of your own model, not of landscape train; "
                             "continue it with its Recorder")
    stored = stored_recipe(out, attrs)
    if recipe is not None and recipe != stored:
        raise LandscapeError(f"{out} was trained with a different recipe; resume it without "
                             "a recipe (or with the same one)")
    if summary["resume_step"] is None:
        raise LandscapeError(f"{out} has no resume state")
    return stored

