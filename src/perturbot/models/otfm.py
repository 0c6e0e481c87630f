"""OT-FM: conditional flow matching with minibatch optimal-transport couplings.

A velocity field v(x, t, p) is trained by plain regression: draw a batch of
control cells x0 and of perturbed cells x1, pair them by the exact optimal
assignment of the batch (Hungarian algorithm on squared distances), draw
t ~ U(0, 1) and regress v at x_t = (1 - t) x0 + t x1 (+ sigma noise) on the
straight-line velocity x1 - x0 (Lipman et al. 2023; Tong et al. 2024). A cell
is predicted by integrating dx/dt = v(x, t, p) from t = 0 to 1. One network,
conditioned on a learned perturbation embedding, learns every perturbation at
once (CellFlow, Klein et al. 2025); ``fit`` is ``fit_many`` with one entry.

Inputs are centred on the control mean and divided by one global scale, which
keeps the W2-optimal pairing unchanged (a translation and an isotropic scaling
of both populations) while letting the defaults work at any feature scale.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from perturbot import checkpoints, training, validation
from perturbot.fingerprint import fit_arrays
from perturbot.models.base import PerturbationModel, fit_inputs
from perturbot.params import Interval, Options
from perturbot.nn.velocity import VelocityField

_INFERENCE_CHUNK = 16384
COUPLINGS = ("exact", "global", "independent")
#: ``coupling: global`` pairs whole populations up to this many cells a side (the cost matrix holds its square).
GLOBAL_MAX_CELLS = 6000
SOLVERS = ("euler", "midpoint", "rk4")
#: ``keep_best=None`` and ``start=None`` decide by the smallest training population: below this many cells, the
#: best weights and flows from the Gaussian map's images (what guards 2,000 cells a side against fitting the
#: training cells); at or above it, the last weights and flows from the cells (better at 20,000; docs/models/otfm.md).
SMALL_POPULATION = 10_000
#: Where each cell's flow starts: the control cell itself, or its image by the closed-form Gaussian (W2) map.
STARTS = ("identity", "gaussian")


class OTFlowMatching(PerturbationModel):
    """OT conditional flow matching estimator; see ``docs/models/otfm.md`` for every keyword.

    Learned state: ``velocity_`` (the network), ``perturbations_``, ``center_`` and
    ``scale_`` (input standardisation), ``history_``, ``val_score_`` (the
    validation ``criterion`` per perturbation, of the kept weights), ``keep_best_`` and ``start_`` (what
    ``keep_best=None`` and ``start=None`` chose by the number of cells) and ``fit_seconds_``.
    """
    name = "otfm"
    is_ot = True
    is_neural = True
    default_space = "latent"

    name = "otfm"
    multi_perturbation = True

    #: Ranges and choices of the hyper-parameters.
    parameter_constraints = {
        "n_iters": Interval(1), "batch_size": Interval(1), "lr": Interval(0, closed="neither"), "lr_min": Interval(0),
        "weight_decay": Interval(0), "hidden_units": Interval(1), "embedding_dim": Interval(1), "time_frequencies": Interval(0),
        "coupling": Options(COUPLINGS), "sigma": Interval(0), "perturbations_per_step": Interval(1),
        "solver": Options(SOLVERS), "n_steps": Interval(1), "criterion": Options(validation.CRITERIA), "val_size": Interval(0),
        "eval_every": Interval(1), "checkpoint_every": Interval(1), "start": Options(STARTS), "patience": Interval(1),
        "gaussian_ridge": Interval(0),
    }

    def __init__(
        self,
        n_iters: int = 8000,
        batch_size: int = 256,
        lr: float = 1e-3,
        lr_min: float = 1e-5,
        weight_decay: float = 0.0,
        hidden_units: tuple[int, ...] = (256, 256, 256),
        embedding_dim: int = 64,
        time_frequencies: int = 0,
        coupling: str = "exact",
        sigma: float = 0.0,
        perturbations_per_step: int | None = None,
        solver: str = "midpoint",
        n_steps: int = 10,
        keep_best: bool | None = None,
        criterion: str = "w2",
        standardize: bool = True,
        val_size: int = 500,
        eval_every: int = 100,
        checkpoint_every: int = 1000,
        start: str | None = None,
        patience: int | None = 30,
        gaussian_ridge: float = 0.1,
        seed: int = 0,
        device: str = "auto",
    ) -> None:
        self.n_iters = n_iters
        self.batch_size = batch_size
        self.lr = lr
        self.lr_min = lr_min
        self.weight_decay = weight_decay
        self.hidden_units = hidden_units
        self.embedding_dim = embedding_dim
        self.time_frequencies = time_frequencies
        self.coupling = coupling
        self.sigma = sigma
        self.perturbations_per_step = perturbations_per_step
        self.solver = solver
        self.n_steps = n_steps
        self.keep_best = keep_best
        self.criterion = criterion
        self.standardize = standardize
        self.val_size = val_size
        self.eval_every = eval_every
        self.checkpoint_every = checkpoint_every
        self.start = start
        self.patience = patience
        self.gaussian_ridge = gaussian_ridge
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------ checks
    def _check_params(self) -> None:
        self._validate_params()
        if self.coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {self.coupling!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        for key in ("n_iters", "batch_size", "n_steps", "eval_every"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)!r}")
        validation.check_criterion(self.criterion)
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma!r}")
        if self.perturbations_per_step is not None and int(self.perturbations_per_step) < 1:
            raise ValueError(f"perturbations_per_step must be None or >= 1, got {self.perturbations_per_step!r}")

    def _build(self, n_features: int, n_perturbations: int) -> VelocityField:
        training.seed_everything(self.seed)
        net = VelocityField(
            n_features, list(self.hidden_units), n_perturbations, int(self.embedding_dim), int(self.time_frequencies)
        )
        return net.to(self.device_)

    # ------------------------------------------------------------- fitting
    def fit_many(
        self, source: Any, targets: dict[str, Any], *, checkpoint: str | None = None
    ) -> "OTFlowMatching":
        """Train one velocity field on every target at once (resumable from ``checkpoint``)."""
        self._check_params()
        src, tgts = fit_inputs(source, targets)
        self.device_ = training.resolve_device(self.device)
        names = list(tgts)
        if self.standardize:
            self.center_ = src.mean(0).astype(float).tolist()
            self.scale_ = float(np.sqrt(src.var(0).mean())) or 1.0
        else:
            self.center_, self.scale_ = [0.0] * src.shape[1], 1.0
        center = np.asarray(self.center_, np.float32)
        data = _Data.make(
            (src - center) / self.scale_, [(tgts[k] - center) / self.scale_ for k in names],
            self.val_size, self.seed, self.device_,
        )
        small = min([len(data.source), *(len(t) for t in data.targets)]) < SMALL_POPULATION
        self.keep_best_ = bool(self.keep_best) if self.keep_best is not None else small
        self.start_ = self.start if self.start is not None else ("gaussian" if small else "identity")
        if self.coupling == "global":
            data.pair_globally(self.seed)
        if self.start_ == "gaussian":  # each flow only corrects the closed-form map: short, nearly straight paths
            data.start_matrix, data.start_shift = _gaussian_starts(data.source, data.targets, self.gaussian_ridge)
        self.start_matrix_, self.start_shift_ = data.start_matrix, data.start_shift
        net = self._build(src.shape[1], len(names))
        if self.start_ == "gaussian":  # zero velocity at first: the untrained flow is the Gaussian map itself
            last = net.net[-1]
            torch.nn.init.zeros_(last.weight)
            torch.nn.init.zeros_(last.bias)
        start, start_cpu = time.perf_counter(), time.process_time()
        ckpt = checkpoints.Checkpoint(checkpoint, self.checkpoint_every, model=self, data=fit_arrays(src, tgts))
        val_score = self._train(net, data, names, ckpt)
        self.fit_seconds_ = {"train": time.perf_counter() - start, "train_cpu": time.process_time() - start_cpu}
        self.n_features_in_ = src.shape[1]
        self.perturbations_ = names
        self.velocity_ = net.eval()
        self.val_score_ = dict(zip(names, val_score))
        return self

    def _train(self, net: VelocityField, data: "_Data", names: list[str], ckpt: checkpoints.Checkpoint) -> list[float]:
        """Adam with cosine decay from ``lr`` to ``lr_min`` on the flow-matching regression loss."""
        n_iters = int(self.n_iters)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_iters, eta_min=self.lr_min)
        gen = training.make_generator(self.seed, self.device_)
        history = training.History()
        n_models = len(names)
        best_score = torch.full((n_models,), float("inf"))
        # in standardised units: the criteria are invariant to one shift and (up to a factor) one scale
        scorers = [validation.SelectionScore(self.criterion, t) if len(t) else None for t in data.target_val]
        column = validation.CRITERIA[self.criterion]
        best = {k: v.detach().clone() for k, v in net.state_dict().items()}
        start = 0
        state = ckpt.load()
        if state is not None:
            net.load_state_dict(state["velocity"])
            opt.load_state_dict(state["optimizer"])
            checkpoints.optimizer_to(opt, self.device_)
            sched.load_state_dict(state["scheduler"])
            checkpoints.restore_generator(gen, state["generator"])
            history.rows = list(state["history"])
            best_score = state["best_score"].clone()
            best = {k: v.to(self.device_) for k, v in state["best"].items()}
            start = int(state["iteration"])
        elif self.keep_best_ and self.start_ == "gaussian":  # the Gaussian map is a candidate too: kept unless beaten
            best_score = self._validation_score(net, data, scorers)
        per_step = min(int(self.perturbations_per_step or n_models), n_models)
        progress = training.Progress("otfm", n_iters, history=history, score_name=column, patience=self.patience)
        if state is not None:
            progress.load_state_dict(state.get("progress"))

        def snapshot(iteration: int) -> dict[str, Any]:
            return {
                "iteration": iteration, "velocity": net.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "generator": checkpoints.generator_state(gen),
                "history": history.rows, "best": best, "best_score": best_score, "progress": progress.state_dict(),
            }

        score = None
        net.train()
        with progress:
            for it in progress.iterations(start, n_iters, on_stop=lambda last: ckpt.save(snapshot(last))):
                chosen = torch.arange(n_models, device=gen.device)
                if per_step < n_models:
                    chosen = torch.randperm(n_models, generator=gen, device=gen.device)[:per_step].sort().values
                chosen = chosen.to(self.device_)
                x0, x1 = data.sample_pairs(chosen, int(self.batch_size), gen, self.coupling)
                loss = self._loss(net, x0, x1, chosen, gen)
                opt.zero_grad(set_to_none=True)
                loss.mean().backward()
                opt.step()
                sched.step()
                if it % self.eval_every == 0 or it == n_iters:
                    score = self._validation_score(net, data, scorers)
                    if self.keep_best_ and torch.isfinite(score).any():
                        # one network for all perturbations: keep it where the mean validation score is lowest
                        if float(score.nanmean()) < float(best_score.nanmean()) or not torch.isfinite(best_score).any():
                            best = {k: v.detach().clone() for k, v in net.state_dict().items()}
                            best_score = score.clone()
                    losses = dict(zip(chosen.tolist(), loss.detach().cpu().tolist()))
                    rows = [{"iteration": it, "perturbation": name, "loss": losses.get(p, float("nan")),
                             column: float(score[p]), "lr": sched.get_last_lr()[0]} for p, name in enumerate(names)]
                    progress.record(it, rows, score=score.numpy(), losses={"loss": float(np.mean(list(losses.values())))})
                    net.train()
                    if progress.converged:  # patience: no perturbation's score improved for that many validations
                        break
                if ckpt.due(it):
                    ckpt.save(snapshot(it))
        ckpt.clear()
        self.history_ = history.to_frame()
        if self.keep_best_ and torch.isfinite(best_score).any():
            net.load_state_dict(best)
            final = best_score
        else:
            final = score if score is not None else self._validation_score(net, data, scorers)
        net.eval()
        return torch.where(torch.isfinite(final), final, float("nan")).tolist()

    def _loss(
        self, net: VelocityField, x0: torch.Tensor, x1: torch.Tensor, chosen: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        """Mean squared error per perturbation between v(x_t, t) and x1 - x0; x0, x1: (P, b, d)."""
        n_models, b, d = x0.shape
        t = torch.rand((n_models, b, 1), generator=gen, device=gen.device).to(x0.device)
        xt = (1 - t) * x0 + t * x1
        if self.sigma > 0:
            noise = torch.randn(x0.shape, generator=gen, device=gen.device).to(x0.device)
            xt = xt + self.sigma * noise
        labels = chosen.view(-1, 1).expand(-1, b).reshape(-1)
        v = net(xt.reshape(-1, d), t.reshape(-1), labels).view(n_models, b, d)
        return (v - (x1 - x0)).pow(2).mean((1, 2))

    @torch.no_grad()
    def _validation_score(self, net: VelocityField, data: "_Data", scorers: list) -> torch.Tensor:
        """The validation ``criterion`` of each perturbation's integrated validation cells (lower is better)."""
        if data.source_val.shape[0] == 0:
            return torch.full((data.n_models,), float("nan"))
        net.eval()
        out = []
        for p in range(data.n_models):
            if scorers[p] is None:  # no validation cells of its own
                out.append(float("nan"))
                continue
            mapped = integrate(net, data.started(data.source_val, p), p, int(self.n_steps), self.solver)
            out.append(scorers[p](mapped))
        return torch.tensor(out, dtype=torch.float64)

    # ----------------------------------------------------------- inference
    def transport(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        """Integrate dx/dt = v(x, t, p) from t = 0 to 1 (``n_steps`` steps of ``solver``)."""
        x = self._check_input(x)
        p = self._perturbation_index(perturbation)
        center = torch.tensor(self.center_, dtype=torch.float32, device=self.device_)
        out = []
        for i in range(0, len(x), _INFERENCE_CHUNK):
            chunk = (torch.from_numpy(x[i : i + _INFERENCE_CHUNK]).to(self.device_) - center) / self.scale_
            chunk = _started(chunk, self.start_matrix_, self.start_shift_, p)
            mapped = integrate(self.velocity_, chunk, p, int(self.n_steps), self.solver)
            out.append((mapped * self.scale_ + center).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    # --------------------------------------------------------- persistence
    def _get_state(self) -> dict[str, Any]:
        return {
            **super()._get_state(),
            "perturbations_": list(self.perturbations_),
            "center_": list(self.center_),
            "scale_": float(self.scale_),
            "val_score_": self.val_score_,
            "keep_best_": bool(self.keep_best_),
            "start_": self.start_,
            "fit_seconds_": self.fit_seconds_,
        }

    def _get_tensors(self) -> dict[str, torch.Tensor]:
        starts = {} if self.start_matrix_ is None else {"start.matrix": self.start_matrix_, "start.shift": self.start_shift_}
        return {**self.velocity_.state_dict(), **starts}

    def _set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.device_ = training.resolve_device(self.device)
        tensors = dict(tensors)
        matrix, shift = tensors.pop("start.matrix", None), tensors.pop("start.shift", None)
        self.start_matrix_ = None if matrix is None else matrix.to(self.device_)
        self.start_shift_ = None if shift is None else shift.to(self.device_)
        net = self._build(self.n_features_in_, len(self.perturbations_))
        net.load_state_dict(tensors)
        self.velocity_ = net.eval()


@torch.no_grad()
def integrate(net: VelocityField, x: torch.Tensor, perturbation: int, n_steps: int, solver: str) -> torch.Tensor:
    """Fixed-step solution of dx/dt = v(x, t) from t = 0 to 1 (Euler, midpoint or classical RK4)."""
    labels = torch.full((x.shape[0],), int(perturbation), dtype=torch.long, device=x.device)
    h = 1.0 / n_steps

    def v(y: torch.Tensor, t: float) -> torch.Tensor:
        return net(y, torch.full((y.shape[0],), t, dtype=y.dtype, device=y.device), labels)

    for k in range(n_steps):
        t = k * h
        if solver == "euler":
            x = x + h * v(x, t)
        elif solver == "midpoint":
            x = x + h * v(x + 0.5 * h * v(x, t), t + 0.5 * h)
        elif solver == "rk4":
            k1 = v(x, t)
            k2 = v(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = v(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = v(x + h * k3, t + h)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        else:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    return x


class _Data:
    """Standardised training and validation cells on the device, with seeded, OT-paired batches."""

    def __init__(self, source: torch.Tensor, source_val: torch.Tensor,
                 targets: list[torch.Tensor], target_val: list[torch.Tensor]) -> None:
        self.source = source
        self.source_val = source_val
        self.targets = targets
        self.target_val = target_val
        self.n_models = len(targets)
        self.start_matrix: torch.Tensor | None = None  # (P, d, d) and (P, d): start: gaussian
        self.start_shift: torch.Tensor | None = None

    def started(self, x: torch.Tensor, p: int) -> torch.Tensor:
        return _started(x, self.start_matrix, self.start_shift, p)

    @classmethod
    def make(cls, source: np.ndarray, targets: list[np.ndarray], val_size: int, seed: int,
             device: torch.device) -> "_Data":
        def split(x: np.ndarray, salt: int) -> tuple[torch.Tensor, torch.Tensor]:
            train, val = validation.carve_validation(len(x), val_size, seed + salt)
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
            return t[torch.from_numpy(train).to(device)], t[torch.from_numpy(val).to(device)]

        src, src_val = split(source, 0)
        pairs = [split(t, p + 1) for p, t in enumerate(targets)]
        # a target too small to carve validation cells from is not scored; the others still are
        return cls(src, src_val, [t for t, _ in pairs], [v for _, v in pairs])

    def _rows(self, n: int, b: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randint(n, (b,), generator=gen, device=gen.device)

    def pair_globally(self, seed: int) -> None:
        """One exact assignment of the whole training populations, per perturbation, computed once
        (``coupling: global``): the empirical W2 map's pairs, instead of one assignment of 512 cells
        per batch and step. The smaller population is repeated (a seeded draw for the remainder) to
        the larger's size; above :data:`GLOBAL_MAX_CELLS` cells a side the square cost matrix is
        too large, and a clear error says to use ``coupling: exact``."""
        rng = np.random.default_rng(seed)
        self.global_pairs = []
        for p, target in enumerate(self.targets):
            n = max(len(self.source), len(target))
            if n > GLOBAL_MAX_CELLS:
                raise ValueError(f"coupling: global pairs whole populations up to {GLOBAL_MAX_CELLS} cells a side; "
                                 f"perturbation {p} has {n}: use coupling: exact (minibatch pairs)")
            rows_src, rows_tgt = _repeat_to(len(self.source), n, rng), _repeat_to(len(target), n, rng)
            pairs = validation.assignment(self.source[rows_src], target[rows_tgt])
            self.global_pairs.append((rows_src, rows_tgt[pairs]))

    def sample_pairs(
        self, chosen: torch.Tensor, b: int, gen: torch.Generator, coupling: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, b, d) control and perturbed cells, row i of each perturbation paired with row i."""
        if coupling == "global":  # pairs drawn from the one assignment of the whole populations
            x0, x1 = [], []
            for p in chosen.tolist():
                rows_src, rows_tgt = self.global_pairs[p]
                draw = self._rows(len(rows_src), b, gen).cpu().numpy()
                x0.append(self.source[torch.from_numpy(rows_src[draw]).to(self.source.device)])
                x1.append(self.targets[p][torch.from_numpy(rows_tgt[draw]).to(self.source.device)])
            return torch.stack(x0), torch.stack(x1)
        x0 = torch.stack([self.source[self._rows(len(self.source), b, gen).to(self.source.device)] for _ in chosen])
        x1 = torch.stack([
            self.targets[p][self._rows(len(self.targets[p]), b, gen).to(self.source.device)]
            for p in chosen.tolist()
        ])
        if self.start_matrix is not None:  # each flow starts at the Gaussian map's image of its cell
            x0 = x0 @ self.start_matrix[chosen].transpose(1, 2) + self.start_shift[chosen][:, None, :]
        if coupling == "exact":
            x1 = validation.pair_by_assignment(x0, x1)
        return x0, x1


def _repeat_to(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of a population of ``n`` repeated to ``size``: every row size // n times, the rest a seeded draw."""
    whole = np.tile(np.arange(n), size // n)
    return np.concatenate([whole, rng.choice(n, size - len(whole), replace=False)])


def _started(x: torch.Tensor, matrix: torch.Tensor | None, shift: torch.Tensor | None, p: int) -> torch.Tensor:
    """Where the flows of cells ``x`` start for perturbation ``p``: the cells, or their Gaussian map images."""
    return x if matrix is None else x @ matrix[p].T + shift[p]


def _gaussian_starts(
    source: torch.Tensor, targets: list[torch.Tensor], ridge: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed-form W2 map between Gaussian fits, x -> A x + c, of every perturbation: (P, d, d), (P, d).

    A population of one training cell has no covariance: its start is the mean shift (A = I)."""
    from perturbot.models.gaussian_ot import gaussian_map

    src = source.cpu().double().numpy()

    def start(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(target) < 2:
            return np.eye(src.shape[1]), target.mean(0) - src.mean(0)
        return gaussian_map(src, target, ridge)

    maps = [start(target.cpu().double().numpy()) for target in targets]
    return (torch.as_tensor(np.stack([m for m, _ in maps]), dtype=torch.float32, device=source.device),
            torch.as_tensor(np.stack([c for _, c in maps]), dtype=torch.float32, device=source.device))
