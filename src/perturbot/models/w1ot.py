"""W1-OT: the Wasserstein-1 neural optimal transport solver (Chen et al.).

Two stages. Stage 1 learns a 1-Lipschitz Kantorovich potential phi by maximising
E phi(source) - E phi(target), whose optimum is W1(source, target); phi then
decreases from source to target along its gradient, so -grad phi(x) is the unit
direction along which x moves. Stage 2 learns only how far: a step-size network
eta >= 0, trained adversarially against a discriminator so that
T(x) = x - eta(x) grad phi(x) is distributed like the target.

All perturbations train jointly: every network is stacked (P copies, batched
matrix products), and ``fit`` is ``fit_many`` with one perturbation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from perturbot import checkpoints, training, validation
from perturbot.fingerprint import fit_arrays
from perturbot.models.base import PerturbationModel, fit_inputs
from perturbot.params import Interval, Options
from perturbot.nn.lipschitz import ORTHOGONALIZATIONS, LipschitzPotential
from perturbot.nn.mlp import mlp

_INFERENCE_CHUNK = 16384


#: How the step-size network starts: "none" (random, the paper's), "gaussian" (the Gaussian map's lengths)
#: or "ot" (the lengths of minibatch-OT pairs, measured along the learned ray).
STEP_INITS = ("none", "gaussian", "ot")
#: Cells a side in each minibatch-OT assignment of ``step_init="ot"`` (larger: closer to the W2 pairing).
OT_LENGTH_BATCH = 512
#: What a preset sets (an explicit value overrides it). "paper": the authors' two stages;
#: "ot_lengths": the paper's potential stage with 256-wide layers, then per-cell lengths from
#: minibatch-OT pairs and no GAN (measured in benchmarks/bench_suite.py, docs/models/w1ot.md).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"n_iters_step": 10_000, "step_init": "none", "hidden_units": (64, 64, 64, 64)},
    "ot_lengths": {"n_iters_step": 0, "step_init": "ot", "hidden_units": (256, 256, 256, 256)},
}


def length_along(x: torch.Tensor, y: torch.Tensor, grad_phi: torch.Tensor) -> torch.Tensor:
    """How far x - eta * grad_phi must go to get closest to y: max(0, <x - y, grad_phi> / |grad_phi|^2)."""
    return (((x - y) * grad_phi).sum(-1) / grad_phi.square().sum(-1).clamp_min(1e-6)).clamp_min(0.0)


class W1OT(PerturbationModel):
    """W1-OT estimator; hyper-parameters as in the paper and the authors' configuration (``preset="paper"``).

    ``preset="ot_lengths"`` keeps the paper's potential and learns the step sizes by regression on
    minibatch-OT pairs instead of the GAN (measured on non-linear W2 ground truth, docs/models/w1ot.md).

    See ``docs/models/w1ot.md`` for every keyword. Learned state: ``potential_``
    (stacked 1-Lipschitz phi), ``step_`` (stacked eta), ``perturbations_``,
    ``history_``, ``w1_validation_`` and ``val_score_`` (the step-size stage's validation
    ``criterion`` of the kept eta, per perturbation), and
    ``fit_seconds_`` (wall and process CPU time of each stage, validation included).
    """
    name = "w1ot"
    is_ot = True
    is_neural = True
    default_space = "latent"

    name = "w1ot"
    multi_perturbation = True

    #: Ranges and choices of the hyper-parameters (a learning rate of 0 freezes a stage).
    parameter_constraints = {
        "n_iters": Interval(1), "n_iters_potential": Interval(0), "n_iters_step": Interval(0), "batch_size": Interval(1),
        "lr_potential": Interval(0), "lr_potential_min": Interval(0), "betas_potential": Interval(0, 1, closed="left"),
        "lr_step": Interval(0), "hidden_units": Interval(1), "n_groups": Interval(1),
        "orthogonalization": Options(ORTHOGONALIZATIONS), "bjorck_iters": Interval(1), "bjorck_iters_eval": Interval(1),
        "step_hidden_units": Interval(1), "val_size": Interval(0), "eval_every": Interval(1), "patience": Interval(1),
        "criterion": Options(validation.CRITERIA), "checkpoint_every": Interval(1),
        "step_init": Options(STEP_INITS), "step_init_iters": Interval(0), "preset": Options(PRESETS),
    }

    def __init__(
        self,
        n_iters: int | None = None,
        n_iters_potential: int = 10_000,
        n_iters_step: int | None = None,
        batch_size: int = 256,
        lr_potential: float = 1e-2,
        lr_potential_min: float = 1e-4,
        betas_potential: tuple[float, float] = (0.5, 0.5),
        lr_step: float = 1e-4,
        hidden_units: tuple[int, ...] | None = None,
        n_groups: int = 4,
        orthogonalization: str = "cayley",
        bjorck_iters: int = 20,
        bjorck_iters_eval: int = 100,
        step_hidden_units: tuple[int, ...] = (64, 64, 64, 64),
        clip_nonnegative: bool = False,
        val_size: int = 500,
        eval_every: int = 250,
        patience: int | None = None,
        criterion: str = "mmd_fixed",
        checkpoint_every: int = 1000,
        step_init: str | None = None,
        step_init_iters: int = 2000,
        preset: str = "paper",
        seed: int = 0,
        device: str = "auto",
    ) -> None:
        self.n_iters = n_iters
        self.n_iters_potential = n_iters_potential
        self.n_iters_step = n_iters_step
        self.batch_size = batch_size
        self.lr_potential = lr_potential
        self.lr_potential_min = lr_potential_min
        self.betas_potential = betas_potential
        self.lr_step = lr_step
        self.hidden_units = hidden_units
        self.n_groups = n_groups
        self.orthogonalization = orthogonalization
        self.bjorck_iters = bjorck_iters
        self.bjorck_iters_eval = bjorck_iters_eval
        self.step_hidden_units = step_hidden_units
        self.clip_nonnegative = clip_nonnegative
        self.val_size = val_size
        self.eval_every = eval_every
        self.patience = patience
        self.criterion = criterion
        self.checkpoint_every = checkpoint_every
        self.step_init = step_init
        self.step_init_iters = step_init_iters
        self.preset = preset
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------ networks
    def _build(self, n_features: int, n_models: int) -> tuple[LipschitzPotential, nn.Module, nn.Module]:
        """phi, eta and the discriminator (logits; sigmoid is applied inside the loss), seeded."""
        if self.orthogonalization not in ORTHOGONALIZATIONS:
            raise ValueError(f"orthogonalization must be one of {ORTHOGONALIZATIONS}, got {self.orthogonalization!r}")
        training.seed_everything(self.seed)
        phi = LipschitzPotential(
            n_features,
            list(self.settings()["hidden_units"]),
            n_groups=self.n_groups,
            n_models=n_models,
            method=self.orthogonalization,
            bjorck_iters=self.bjorck_iters,
            bjorck_iters_eval=self.bjorck_iters_eval,
        )
        hidden = list(self.step_hidden_units)
        eta = mlp(n_features, hidden, 1, "leaky_relu", "softplus", n_models=n_models)
        disc = mlp(n_features, hidden, 1, "leaky_relu", None, n_models=n_models)
        return phi.to(self.device_), eta.to(self.device_), disc.to(self.device_)

    def settings(self) -> dict[str, Any]:
        """The preset's values with every explicitly given one in its place."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        return {k: v if getattr(self, k) is None else getattr(self, k) for k, v in PRESETS[self.preset].items()}

    def resolved_params(self) -> dict[str, Any]:
        """Every hyper-parameter, with the preset's values in place of ``None``."""
        return {**self.get_params(), **self.settings()}

    def _iterations(self) -> tuple[int, int]:
        """(potential, step) iterations: ``n_iters`` sets both, but a step stage switched off stays off."""
        n_step = int(self.settings()["n_iters_step"])
        if self.n_iters is not None:
            return int(self.n_iters), int(self.n_iters) if n_step > 0 else 0
        return int(self.n_iters_potential), n_step

    # ------------------------------------------------------------- fitting
    def fit_many(
        self, source: Any, targets: dict[str, Any], *, checkpoint: str | None = None
    ) -> "W1OT":
        """Fit one potential and one step-size network per target, all in the same batched loop."""
        self._validate_params()
        src, tgts = fit_inputs(source, targets)
        validation.check_criterion(self.criterion)
        self.device_ = training.resolve_device(self.device)
        names = list(tgts)
        n_pot, n_step = self._iterations()
        phi, eta, disc = self._build(src.shape[1], len(names))
        data = _Data.make(src, [tgts[k] for k in names], self.val_size, self.seed, self.device_)

        ckpt = checkpoints.Checkpoint(checkpoint, self.checkpoint_every, model=self, data=fit_arrays(src, tgts))
        state = ckpt.load()
        gen = training.make_generator(self.seed, self.device_)
        history = training.History()
        if state is not None:
            checkpoints.restore_generator(gen, state["generator"])
            history.rows = list(state["history"])

        start, start_cpu = time.perf_counter(), time.process_time()
        if state is not None and state["stage"] == "step":
            phi.load_state_dict(state["potential"])
            phi.eval()
            w1_val = self._validation_w1(phi, data)
            step_state = state
        else:
            w1_val = self._fit_potential(phi, data, n_pot, gen, history, ckpt, state, names, n_step)
            step_state = None
            step_init = self.settings()["step_init"]
            if step_init == "gaussian":
                self._init_step_gaussian(phi, eta, data, gen)
            elif step_init == "ot":
                self._init_step_ot(phi, eta, data, gen)
        middle, middle_cpu = time.perf_counter(), time.process_time()
        val_score = self._fit_step(phi, eta, disc, data, n_pot, n_step, gen, history, ckpt, step_state, names)
        ckpt.clear()
        self.fit_seconds_ = {
            "potential": middle - start, "step": time.perf_counter() - middle,
            "potential_cpu": middle_cpu - start_cpu, "step_cpu": time.process_time() - middle_cpu,
        }

        self.n_features_in_ = src.shape[1]
        self.perturbations_ = names
        self.potential_ = phi.eval()
        self.step_ = eta.eval()
        self.history_ = history.to_frame()
        self.w1_validation_ = dict(zip(names, w1_val))
        self.val_score_ = dict(zip(names, val_score))
        self._members: dict[int, tuple[LipschitzPotential, nn.Module]] = {}
        return self

    def _fit_potential(
        self,
        phi: LipschitzPotential,
        data: "_Data",
        n_iters: int,
        gen: torch.Generator,
        history: training.History,
        ckpt: checkpoints.Checkpoint,
        state: dict[str, Any] | None,
        names: list[str],
        n_step: int = 0,
    ) -> list[float]:
        """Stage 1: Adam (betas 0.5, 0.5) with cosine annealing on -(E phi(x) - E phi(y))."""
        # fused Adam: one kernel for all parameters, 3-4x cheaper per step on CPU than the default loop
        opt = torch.optim.Adam(
            phi.parameters(), lr=self.lr_potential, betas=tuple(self.betas_potential), fused=True
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(n_iters, 1), eta_min=self.lr_potential_min
        )
        progress = training.Progress(
            "w1ot potential", n_iters, history=history, patience=self.patience, score_name="val_w1",
            higher_is_better=True, total_shown=n_iters + n_step,
        )
        start = 0
        if state is not None:
            phi.load_state_dict(state["potential"])
            opt.load_state_dict(state["opt_potential"])
            checkpoints.optimizer_to(opt, self.device_)
            sched.load_state_dict(state["scheduler"])
            start = int(state["iteration"])
            progress.load_state_dict(state.get("progress"))

        def snapshot(iteration: int) -> dict[str, Any]:
            return {
                "stage": "potential", "iteration": iteration, "potential": phi.state_dict(),
                "opt_potential": opt.state_dict(), "scheduler": sched.state_dict(),
                "generator": checkpoints.generator_state(gen), "history": history.rows,
                "progress": progress.state_dict(),
            }

        phi.train()
        b = self.batch_size
        with progress:
            for it in progress.iterations(start, n_iters, on_stop=lambda last: ckpt.save(snapshot(last))):
                x = torch.cat([data.sample_source(b, gen), data.sample_target(b, gen)], dim=1)
                out = phi(x)
                gap = out[:, :b].mean(1) - out[:, b:].mean(1)
                opt.zero_grad(set_to_none=True)
                (-gap.sum()).backward()
                opt.step()
                sched.step()
                if it % self.eval_every == 0 or it == n_iters:
                    phi.eval()
                    w1 = self._validation_w1(phi, data)
                    phi.train()
                    loss = [-float(v) for v in gap.detach()]
                    rows = [{"stage": "potential", "iteration": it, "perturbation": name,
                             "loss_potential": loss[p], "val_w1": w1[p]} for p, name in enumerate(names)]
                    progress.record(it, rows, score=w1, losses={"loss_potential": float(np.mean(loss))})
                    if progress.converged:
                        break
                if ckpt.due(it):
                    ckpt.save(snapshot(it))
        phi.eval()
        return self._validation_w1(phi, data)

    def _fit_step(
        self,
        phi: LipschitzPotential,
        eta: nn.Module,
        disc: nn.Module,
        data: "_Data",
        n_pot: int,
        n_iters: int,
        gen: torch.Generator,
        history: training.History,
        ckpt: checkpoints.Checkpoint,
        state: dict[str, Any] | None,
        names: list[str],
    ) -> list[float]:
        """Stage 2: non-saturating GAN on T(x) = x - eta(x) grad phi(x); keeps the best eta by the validation criterion."""
        phi.eval()
        dir_train = data.source_directions(phi, data.source)
        dir_val = data.source_directions(phi, data.source_val)
        opt_eta = torch.optim.Adam(eta.parameters(), lr=self.lr_step, fused=True)
        opt_disc = torch.optim.Adam(disc.parameters(), lr=self.lr_step, fused=True)
        n_models = len(names)
        best_score = torch.full((n_models,), float("inf"))
        best = {k: v.detach().clone() for k, v in eta.state_dict().items()}
        scorers = [validation.SelectionScore(self.criterion, t) if len(t) else None for t in data.target_val]
        column = validation.CRITERIA[self.criterion]
        progress = training.Progress(
            "w1ot step", n_iters, history=history, patience=self.patience, score_name=column, offset=n_pot,
        )
        start = 0
        if state is not None:
            for module, key in ((eta, "step"), (disc, "discriminator")):
                module.load_state_dict(state[key])
            for opt, key in ((opt_eta, "opt_step"), (opt_disc, "opt_discriminator")):
                opt.load_state_dict(state[key])
                checkpoints.optimizer_to(opt, self.device_)
            best_score = state["best_score"].clone()
            best = {k: v.to(self.device_) for k, v in state["best_step"].items()}
            start = int(state["iteration"])
            progress.load_state_dict(state.get("progress"))

        def snapshot(iteration: int) -> dict[str, Any]:
            return {
                "stage": "step", "iteration": iteration, "potential": phi.state_dict(),
                "step": eta.state_dict(), "discriminator": disc.state_dict(),
                "opt_step": opt_eta.state_dict(), "opt_discriminator": opt_disc.state_dict(),
                "best_step": best, "best_score": best_score,
                "generator": checkpoints.generator_state(gen), "history": history.rows,
                "progress": progress.state_dict(),
            }

        # a chosen start (step_init) competes with what the GAN makes of it: scored at iteration 0
        score_start = state is None and self.settings()["step_init"] != "none"
        eta.train()
        disc.train()
        b = self.batch_size
        eta_params = list(eta.parameters())
        with progress:
            if score_start:
                score = self._validation_score(eta, data, dir_val, scorers)
                rows = [{"stage": "step", "iteration": n_pot, "perturbation": name, column: float(score[p])}
                        for p, name in enumerate(names)]
                improved = torch.from_numpy(progress.record(0, rows, score=score.numpy()))
                best_score = torch.where(improved, score, best_score)
            for it in progress.iterations(start, n_iters, on_stop=lambda last: ckpt.save(snapshot(last))):
                idx = data.source_index(b, gen)
                x = data.source[idx]
                y = data.sample_target(b, gen)
                mapped = self._move(x, dir_train[data.model_index, idx], eta)
                logits = disc(torch.cat([y, mapped.detach()], dim=1)).squeeze(-1)
                # -log D(y) - log(1 - D(T(x))) with D = sigmoid(logits)
                loss_disc = F.softplus(-logits[:, :b]).mean(1) + F.softplus(logits[:, b:]).mean(1)
                opt_disc.zero_grad(set_to_none=True)
                loss_disc.sum().backward()
                opt_disc.step()
                # non-saturating generator loss -log D(T(x))
                loss_eta = F.softplus(-disc(mapped).squeeze(-1)).mean(1)
                opt_eta.zero_grad(set_to_none=True)
                loss_eta.sum().backward(inputs=eta_params)
                opt_eta.step()
                if it % self.eval_every == 0 or it == n_iters:
                    score = self._validation_score(eta, data, dir_val, scorers)
                    l_disc, l_eta = loss_disc.detach().cpu().tolist(), loss_eta.detach().cpu().tolist()
                    rows = [{"stage": "step", "iteration": n_pot + it, "perturbation": name,
                             "loss_discriminator": l_disc[p], "loss_step": l_eta[p], column: float(score[p])}
                            for p, name in enumerate(names)]
                    improved = torch.from_numpy(progress.record(
                        it, rows, score=score.numpy(),
                        losses={"loss_discriminator": float(np.mean(l_disc)), "loss_step": float(np.mean(l_eta))},
                    ))
                    if improved.any():
                        mask = improved.to(self.device_)
                        for k, v in eta.state_dict().items():
                            keep = mask.view(-1, *([1] * (v.dim() - 1)))
                            best[k] = torch.where(keep, v.detach(), best[k])
                        best_score = torch.where(improved, score, best_score)
                    if progress.converged:
                        break
                if ckpt.due(it):
                    ckpt.save(snapshot(it))
        # perturbations without a finite validation score (no validation cells) keep the last eta
        found = torch.isfinite(best_score).to(self.device_)
        with torch.no_grad():
            for k, v in eta.state_dict().items():
                v.copy_(torch.where(found.view(-1, *([1] * (v.dim() - 1))), best[k], v))
        eta.eval()
        return torch.where(torch.isfinite(best_score), best_score, float("nan")).tolist()

    def _init_step_gaussian(self, phi: LipschitzPotential, eta: nn.Module, data: "_Data", gen: torch.Generator) -> None:
        """Start eta at the closed-form Gaussian map's lengths along -grad phi (``step_init="gaussian"``).

        For each perturbation, G is the Gaussian OT map of the training cells; eta is
        regressed (``step_init_iters`` Adam steps) on max(0, <x - G(x), grad phi(x)> /
        ||grad phi(x)||^2), the length of G's displacement along the learned ray. The
        GAN then starts from there, and the start is kept if no later step size
        scores better on the validation cells.
        """
        from perturbot.models.gaussian_ot import GaussianOT

        src = data.source
        src_np = src.cpu().numpy()
        directions = data.source_directions(phi, src)
        lengths = []
        for p in range(data.n_models):
            start = int(data.offsets[p])
            target = data.target[start : start + int(data.sizes[p])].cpu().numpy()
            mapped = torch.from_numpy(GaussianOT(seed=self.seed).fit(src_np, target).transport(src_np)).to(src)
            lengths.append(length_along(src, mapped, directions[p]))
        lengths = torch.stack(lengths)

        def draw() -> tuple[torch.Tensor, torch.Tensor]:
            idx = data.source_index(self.batch_size, gen)
            return src[idx], lengths.gather(1, idx)

        self._regress_step(eta, draw, decay=False)

    def _init_step_ot(self, phi: LipschitzPotential, eta: nn.Module, data: "_Data", gen: torch.Generator) -> None:
        """Start eta at the lengths of minibatch-OT pairs along -grad phi (``step_init="ot"``).

        Each of ``step_init_iters`` Adam steps draws ``OT_LENGTH_BATCH`` control and perturbed
        cells, pairs them by the exact assignment of least squared distance (as OT-FM does) and
        regresses eta(x) on max(0, <x - y, grad phi(x)> / ||grad phi(x)||^2), the length of each
        pair's displacement along the learned ray. The regression averages the pairs, so eta
        approaches the conditional mean length, per cell, of the minibatch-OT coupling; the
        learning rate decays by a cosine from 1e-3 to 1e-5.
        """
        src = data.source
        directions = data.source_directions(phi, src)  # (P, n, d)

        def draw() -> tuple[torch.Tensor, torch.Tensor]:
            idx = data.source_index(OT_LENGTH_BATCH, gen)
            x = src[idx]
            y = validation.pair_by_assignment(x, data.sample_target(OT_LENGTH_BATCH, gen))
            d = torch.gather(directions, 1, idx[..., None].expand(-1, -1, directions.shape[-1]))
            return x, length_along(x, y, d)

        self._regress_step(eta, draw, decay=True)

    def _regress_step(self, eta: nn.Module, draw: Callable[[], tuple[torch.Tensor, torch.Tensor]], decay: bool) -> None:
        """``step_init_iters`` Adam steps (lr 1e-3, cosine-decayed to 1e-5 if ``decay``) of eta(x) on the
        lengths ``draw()`` returns with its cells, both (P, b, ...)."""
        opt = torch.optim.Adam(eta.parameters(), lr=1e-3)
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.step_init_iters, 1), eta_min=1e-5)
                 if decay else None)
        eta.train()
        for _ in range(self.step_init_iters):
            x, lengths = draw()
            loss = (eta(x).squeeze(-1) - lengths).square().mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()

    def _move(self, x: torch.Tensor, direction: torch.Tensor, eta: nn.Module) -> torch.Tensor:
        mapped = x - eta(x) * direction
        return mapped.clamp_min(0.0) if self.clip_nonnegative else mapped

    @torch.no_grad()
    def _validation_w1(self, phi: LipschitzPotential, data: "_Data") -> list[float]:
        if data.source_val.shape[0] == 0:
            return [float("nan")] * data.n_models
        src = phi(data.source_val.expand(data.n_models, -1, -1)).mean(1)
        tgt = (phi(data.target_val_padded) * data.target_val_mask).sum(1) / data.target_val_mask.sum(1)
        return (src - tgt).tolist()

    @torch.no_grad()
    def _validation_score(
        self, eta: nn.Module, data: "_Data", dir_val: torch.Tensor, scorers: list
    ) -> torch.Tensor:
        if data.source_val.shape[0] == 0:
            return torch.full((data.n_models,), float("nan"), dtype=torch.float64)
        x = data.source_val.expand(data.n_models, -1, -1)
        mapped = self._move(x, dir_val, eta)
        return torch.tensor([scorers[p](mapped[p]) if scorers[p] is not None else float("nan")
                             for p in range(data.n_models)], dtype=torch.float64)

    # ----------------------------------------------------------- inference
    def _member(self, perturbation: str | None) -> tuple[LipschitzPotential, nn.Module]:
        """phi and eta of one perturbation as single (P=1) networks, built once and cached."""
        p = self._perturbation_index(perturbation)
        if p not in self._members:
            phi, eta, _ = self._build(self.n_features_in_, 1)
            phi.load_state_dict({k: v[p : p + 1] for k, v in self.potential_.state_dict().items()})
            eta.load_state_dict({k: v[p : p + 1] for k, v in self.step_.state_dict().items()})
            self._members[p] = (phi.eval(), eta.eval())
        return self._members[p]

    def _chunks(self, x: Any):
        x = self._check_input(x)
        for i in range(0, len(x), _INFERENCE_CHUNK):
            yield torch.from_numpy(x[i : i + _INFERENCE_CHUNK]).to(self.device_)[None]

    def potential(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        """Kantorovich potential phi(x) per cell (high on the source side)."""
        phi, _ = self._member(perturbation)
        with torch.no_grad():
            return np.concatenate([phi(c)[0].cpu().numpy() for c in self._chunks(x)])

    def direction(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        """grad phi(x) per cell (norm <= 1, about 1 where mass moves); cells move along its opposite."""
        phi, _ = self._member(perturbation)
        return np.concatenate([phi.value_and_grad(c)[1][0].cpu().numpy() for c in self._chunks(x)])

    def step_size(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        """eta(x) per cell: how far each cell moves along -grad phi(x)."""
        _, eta = self._member(perturbation)
        with torch.no_grad():
            return np.concatenate([eta(c)[0, :, 0].cpu().numpy() for c in self._chunks(x)])

    def transport(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        """T(x) = x - eta(x) grad phi(x) (clipped at 0 when ``clip_nonnegative``)."""
        phi, eta = self._member(perturbation)
        out = []
        for c in self._chunks(x):
            _, grad = phi.value_and_grad(c)
            with torch.no_grad():
                out.append(self._move(c, grad, eta)[0].cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def w1_estimate(self, source: Any, target: Any, perturbation: str | None = None) -> float:
        """Dual estimate E phi(source) - E phi(target), a lower bound on W1 for any 1-Lipschitz phi."""
        return float(self.potential(source, perturbation).mean() - self.potential(target, perturbation).mean())

    # --------------------------------------------------------- persistence
    def _get_state(self) -> dict[str, Any]:
        return {
            **super()._get_state(),
            "perturbations_": list(self.perturbations_),
            "w1_validation_": self.w1_validation_,
            "val_score_": self.val_score_,
            "fit_seconds_": self.fit_seconds_,
        }

    def _get_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"potential.{k}": v for k, v in self.potential_.state_dict().items()}
        tensors.update({f"step.{k}": v for k, v in self.step_.state_dict().items()})
        return tensors

    def _set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.device_ = training.resolve_device(self.device)
        phi, eta, _ = self._build(self.n_features_in_, len(self.perturbations_))
        for module, prefix in ((phi, "potential."), (eta, "step.")):
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        self.potential_ = phi.eval()
        self.step_ = eta.eval()
        self._members = {}


class _Data:
    """Training and validation cells on the device, with seeded batch sampling for P targets at once."""

    def __init__(
        self,
        source: torch.Tensor,
        source_val: torch.Tensor,
        targets: list[torch.Tensor],
        target_val: list[torch.Tensor],
        device: torch.device,
    ) -> None:
        self.source = source  # (n, d), shared by all perturbations
        self.source_val = source_val
        self.target = torch.cat(targets)  # all targets stacked; rows of p start at offsets[p]
        sizes = torch.tensor([len(t) for t in targets], device=device)
        self.sizes = sizes
        self.offsets = torch.cumsum(sizes, 0) - sizes
        self.target_val = target_val  # list of (n_p, d)
        # the same, zero-padded to (P, max n_p, d) with a (P, max n_p) mask, for one batched pass
        self.target_val_padded = nn.utils.rnn.pad_sequence(target_val, batch_first=True)
        self.target_val_mask = nn.utils.rnn.pad_sequence(
            [torch.ones(len(v), device=device) for v in target_val], batch_first=True
        )
        self.n_models = len(targets)
        self.model_index = torch.arange(self.n_models, device=device)[:, None]

    @classmethod
    def make(cls, source: np.ndarray, targets: list[np.ndarray], val_size: int, seed: int,
             device: torch.device) -> "_Data":
        def split(x: np.ndarray, salt: int) -> tuple[torch.Tensor, torch.Tensor]:
            train, val = validation.carve_validation(len(x), val_size, seed + salt)
            t = torch.from_numpy(x).to(device)
            return t[torch.from_numpy(train).to(device)], t[torch.from_numpy(val).to(device)]

        src, src_val = split(source, 0)
        pairs = [split(t, p + 1) for p, t in enumerate(targets)]
        # a target too small to carve validation cells from keeps its last step network; the others select theirs
        return cls(src, src_val, [t for t, _ in pairs], [v for _, v in pairs], device)

    def _uniform(self, sizes: torch.Tensor, b: int, gen: torch.Generator) -> torch.Tensor:
        u = torch.rand((self.n_models, b), generator=gen, device=gen.device)
        return torch.minimum((u * sizes.view(-1, 1)).long(), sizes.view(-1, 1) - 1)

    def source_index(self, b: int, gen: torch.Generator) -> torch.Tensor:
        """(P, b) row indices into ``source``, drawn independently for each perturbation."""
        n = torch.full((self.n_models,), self.source.shape[0], device=gen.device)
        return self._uniform(n, b, gen).to(self.source.device)

    def sample_source(self, b: int, gen: torch.Generator) -> torch.Tensor:
        return self.source[self.source_index(b, gen)]

    def sample_target(self, b: int, gen: torch.Generator) -> torch.Tensor:
        """(P, b, d) target cells, row p drawn from perturbation p's cells."""
        sizes = self.sizes.to(gen.device)
        idx = self._uniform(sizes, b, gen) + self.offsets.to(gen.device).view(-1, 1)
        return self.target[idx.to(self.target.device)]

    @staticmethod
    def source_directions(phi: LipschitzPotential, x: torch.Tensor) -> torch.Tensor:
        """grad phi of every perturbation's potential at the shared cells x: (P, n, d)."""
        n_models = phi.layers[0].weight.shape[0]
        if x.shape[0] == 0:
            return x.new_zeros((n_models, 0, x.shape[1]))
        return torch.cat([
            phi.value_and_grad(x[i : i + _INFERENCE_CHUNK].expand(n_models, -1, -1))[1]
            for i in range(0, len(x), _INFERENCE_CHUNK)
        ], dim=1)
