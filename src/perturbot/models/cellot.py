"""CellOT (Bunne et al., Nature Methods 2023): W2 neural optimal transport with two ICNNs.

The transport map is ``T = grad g``. The potentials are trained by the min-max
schedule of the authors' code (Makkuva et al. 2020): per iteration one target
batch ``y``; ``n_inner_iters`` Adam steps on g, each on a fresh source batch
``x``, minimising ``mean[f(T(x)) - <x, T(x)>] + fnorm_penalty * sum_l ||relu(-W_l)||_F``
(g is only penalised towards convexity); then one Adam step on f, on a fresh
source batch, minimising ``mean[f(y) - f(T(x))]``, after which f's ``W`` weights
are clamped to be non-negative (f stays convex).

Differences from the authors' code, all for speed or hygiene, none changing
the algorithm: the validation MMD that selects the kept weights uses a seeded
subset carved from the training cells instead of a test batch; batches are
drawn with replacement from tensors kept on the device instead of a data
loader; ``T`` is the network's explicitly written-out gradient rather than an
``autograd.grad`` call; and ``fit_many`` trains the maps of P perturbations
as one stacked model (weights of shape ``(P, out, in)``, batched matmuls). The
P problems stay independent: each has its own potentials, batches, Adam state
(Adam is element-wise) and kept best weights. Each keeps the batch size and
the validation it would get alone: perturbation p's batches hold
``min(batch_size, source cells, its training cells)`` cells (the batched
products run on the largest and average each row over its own first cells),
and a perturbation without validation cells keeps its last weights while the
others still select theirs (no early stop then, as when it trains alone).

``preset`` picks the training recipe: ``"paper"`` (the default) is the above,
exactly; ``"fast"`` standardises the inputs with one scale (which keeps the W2
map equivariant), starts both potentials at the closed-form Gaussian (Bures)
map between the two populations and its inverse, trains with a larger
learning rate and fewer g steps, and stops on validation patience;
``"accurate"`` has the same start but trains with the ``"cycle"`` solver, a
larger batch and a decaying learning rate for a fixed budget (see
docs/models/cellot.md for what each choice buys). ``fast`` and ``accurate``
keep the weights with the lowest empirical W2 on the validation cells,
``paper`` those with the lowest MMD. A hyper-parameter given explicitly
overrides the preset's value.

``solver`` picks how the potentials are trained (``paper`` and ``fast``:
``"minmax"``, ``accurate``: ``"cycle"``, see :class:`_CycleTrainer`):
``"minmax"`` is the schedule above; ``"amortized"`` is Amos's
amortised conjugate (ICLR 2023) as OTT-JAX's ``W2NeuralDual`` implements it
with ``amortization_loss="regression"``. Mapped onto this module's names: g
(``T = grad g``, source side) is the exact potential, a convex ICNN (its ``W``
clamped to be non-negative after every step) trained on the dual
``mean g(x) + mean g*(y)``; its conjugate at a target cell,
``g*(y) = <x_hat, y> - g(x_hat)``, takes ``x_hat = argmax_x <x, y> - g(x)``
from a batched L-BFGS started at ``grad f(y)``; f is only the amortisation
model, trained by regression ``mean ||grad f(y) - x_hat||^2``. One source and
one target batch per iteration feed both updates (OTT's ``parallel_updates``
with its default ``num_inner_iters=1``). ``potential_f`` then reports g's
conjugate computed the same way (so ``grad f`` still maps targets back) and
``w2_estimate`` uses ``g`` and ``g*``. Departures from OTT-JAX: the L-BFGS is
written out in torch, batched over cells (each cell keeps its own curvature
pairs and backtracking step; OTT calls jaxopt's L-BFGS per cell under vmap)
with OTT's defaults (at most ``conjugate_iters=20`` iterations, gradient
tolerance 1e-5, history 10, up to 20 backtracking halvings), plus one rule
for float32: where a step's predicted decrease is below what float32 resolves
the unit step is taken if it shrinks the gradient, and a cell whose step was
halved below that resolution stops (without it, cells at their optimum burn
every line-search halving on rounding noise); ``n_inner_iters`` and
``fnorm_penalty`` are unused (g is clamped, f needs no convexity: it only
predicts points; OTT with ``pos_weights=False`` penalises both and clamps
the exact potential); the weights kept are still selected on validation MMD.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from perturbot import training
from perturbot.fingerprint import fit_arrays
from perturbot.models.base import PerturbationModel, as_float_array
from perturbot.models.gaussian_ot import gaussian_map
from perturbot.nn.icnn import ACTIVATIONS, StackedICNN
from perturbot.params import Interval, Options

#: Rows per forward pass at inference, to bound memory on large inputs.
CHUNK = 16384

#: Hyper-parameters a preset sets (an explicit value overrides them).
PRESETS: dict[str, dict[str, Any]] = {
    # the authors' configs/models/cellot.yaml
    "paper": dict(
        n_iters=100_000, n_inner_iters=10, batch_size=256, lr=1e-4, beta1=0.5, beta2=0.9,
        init="uniform", standardize=False, eval_every=250, patience=0,
        criterion="mmd_fixed", lr_min=None, hidden_units=(64, 64, 64, 64), solver="minmax",
        activation="leaky_relu", keep_best=True, gaussian_ridge=1e-3,
    ),
    # measured in benchmarks/bench_cellot.py, see docs/models/cellot.md
    "fast": dict(
        n_iters=5_000, n_inner_iters=2, batch_size=256, lr=1e-3, beta1=0.5, beta2=0.9,
        init="gaussian", standardize=True, eval_every=100, patience=10,
        criterion="w2", lr_min=None, hidden_units=(64, 64, 64, 64), solver="minmax",
        activation="leaky_relu", keep_best=True, gaussian_ridge=1e-3,
    ),
    # measured in benchmarks/bench_suite.py on non-linear ground truth, see docs/models/cellot.md
    "accurate": dict(
        n_iters=30_000, n_inner_iters=1, batch_size=1024, lr=3e-3, beta1=0.5, beta2=0.9,
        init="gaussian", standardize=True, eval_every=250, patience=0,
        criterion="w2", lr_min=1e-5, hidden_units=(64, 64, 64, 64), solver="cycle",
        activation="leaky_relu", keep_best=False, gaussian_ridge=1e-3,
    ),
}
INITS = ("uniform", "identity", "gaussian")
SOLVERS = ("minmax", "amortized", "cycle")
#: Conjugate solver (OTT-JAX's DEFAULT_CONJUGATE_SOLVER): gradient tolerance, curvature pairs kept,
#: backtracking halvings, Armijo constant.
CONJUGATE_TOL = 1e-5
CONJUGATE_HISTORY = 10
CONJUGATE_LINESEARCH = 20
ARMIJO = 1e-4
#: A predicted decrease below this share of the objective's terms is rounding noise in float32.
RESOLUTION = 1e-6


@dataclass(frozen=True)
class Settings:
    """A preset's values with the explicit overrides applied: what training uses."""

    n_iters: int
    n_inner_iters: int
    batch_size: int
    lr: float
    beta1: float
    beta2: float
    init: str
    standardize: bool
    eval_every: int
    patience: int
    #: what the kept weights are selected by on the validation cells (``training.CRITERIA``)
    criterion: str = "mmd_fixed"
    #: cosine decay of both learning rates from ``lr`` to ``lr_min`` over ``n_iters`` (None: constant)
    lr_min: float | None = None
    hidden_units: tuple[int, ...] = (64, 64, 64, 64)
    solver: str = "minmax"
    #: the ICNNs' hidden activation (``perturbot.nn.icnn.ACTIVATIONS``)
    activation: str = "leaky_relu"
    #: restore the weights the criterion scored best (False: keep the last, e.g. after a decayed learning rate)
    keep_best: bool = True
    #: ridge added to the covariances of ``init: gaussian`` (gaussian_ot.gaussian_map), in standardised units
    gaussian_ridge: float = 1e-3


class CellOT(PerturbationModel):
    """Neural W2 optimal transport between control and perturbed cells (see module docstring)."""
    is_ot = True
    is_neural = True
    default_space = "latent"

    name = "cellot"
    multi_perturbation = True

    #: Ranges and choices of the hyper-parameters (None, where the hint allows it, takes the preset's value).
    parameter_constraints = {
        "preset": Options(PRESETS), "hidden_units": Interval(1), "n_iters": Interval(1), "n_inner_iters": Interval(1),
        "batch_size": Interval(1), "lr": Interval(0, closed="neither"), "beta1": Interval(0, 1, closed="left"),
        "beta2": Interval(0, 1, closed="left"), "init": Options(INITS), "fnorm_penalty": Interval(0),
        "negative_slope": Interval(0, 1), "init_scale": Interval(0), "eval_every": Interval(1), "val_size": Interval(0),
        "patience": Interval(0), "criterion": Options(training.CRITERIA), "lr_min": Interval(0), "checkpoint_every": Interval(1),
        "solver": Options(SOLVERS), "conjugate_iters": Interval(1), "cycle_weight": Interval(0, closed="neither"),
        "activation": Options(ACTIVATIONS), "gaussian_ridge": Interval(0),
    }

    def __init__(
        self,
        preset: str = "paper",
        hidden_units: Sequence[int] | None = None,
        n_iters: int | None = None,
        n_inner_iters: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        beta1: float | None = None,
        beta2: float | None = None,
        init: str | None = None,
        standardize: bool | None = None,
        fnorm_penalty: float = 1.0,
        negative_slope: float = 0.2,
        init_scale: float = 0.1,
        eval_every: int | None = None,
        val_size: int = 500,
        patience: int | None = None,
        criterion: str | None = None,
        lr_min: float | None = None,
        checkpoint_every: int = 1000,
        solver: str | None = None,
        conjugate_iters: int = 20,
        cycle_weight: float = 1.0,
        activation: str | None = None,
        keep_best: bool | None = None,
        gaussian_ridge: float | None = None,
        seed: int = 0,
        device: str = "auto",
    ) -> None:
        self.preset = preset
        self.hidden_units = hidden_units
        self.n_iters = n_iters
        self.n_inner_iters = n_inner_iters
        self.batch_size = batch_size
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.init = init
        self.standardize = standardize
        self.fnorm_penalty = fnorm_penalty
        self.negative_slope = negative_slope
        self.init_scale = init_scale
        self.eval_every = eval_every
        self.val_size = val_size
        self.patience = patience
        self.criterion = criterion
        self.lr_min = lr_min
        self.checkpoint_every = checkpoint_every
        self.solver = solver
        self.conjugate_iters = conjugate_iters
        self.cycle_weight = cycle_weight
        self.activation = activation
        self.keep_best = keep_best
        self.gaussian_ridge = gaussian_ridge
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------------ fit
    def fit_many(
        self, source: Any, targets: Mapping[str, Any], *, checkpoint: str | None = None
    ) -> "CellOT":
        """Learn one map per perturbation, all in one batched training loop."""
        hp = self._check_params()
        source = as_float_array(source, "source")
        if not targets:
            raise ValueError("targets is empty: give at least one perturbation")
        names = [str(k) for k in targets]
        if len(set(names)) != len(names):
            raise ValueError(f"perturbation names must be distinct as strings, got {list(targets)}")
        tgts = [as_float_array(t, f"target {name!r}") for name, t in zip(names, targets.values())]
        for name, t in zip(names, tgts):
            if t.shape[1] != source.shape[1]:
                raise ValueError(
                    f"target {name!r} has {t.shape[1]} features but source has {source.shape[1]}"
                )
        self.device_ = training.resolve_device(self.device)
        self.settings_ = hp
        # resumed only by the same run: these cells, these resolved settings (see perturbot.fingerprint)
        ckpt = training.Checkpoint(checkpoint, every=self.checkpoint_every, model=self,
                                   data=fit_arrays(source, dict(zip(names, tgts))))
        if hp.standardize:
            # one scale for every feature: a W2 map stays W2-optimal under x -> (x - m) / s
            self.shift_ = source.astype(np.float64).mean(0)
            self.scale_ = float(np.sqrt(source.var(0).mean())) or 1.0
            source = self._standardise(source)
            tgts = [self._standardise(t) for t in tgts]
        trainer_cls = {"minmax": _Trainer, "amortized": _AmortizedTrainer, "cycle": _CycleTrainer}[hp.solver]
        trainer = trainer_cls(self, hp, source, tgts, names, self.device_)
        result = trainer.run(ckpt)
        self.n_features_in_ = source.shape[1]
        self.perturbations_ = names
        self.f_, self.g_ = result.f, result.g
        self.best_iteration_ = result.best_iteration
        self.n_iter_ = result.n_iter
        self.history_ = result.history.to_frame()
        return self

    def settings(self) -> Settings:
        """The preset's hyper-parameters with every explicitly given one in its place."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        values = dict(PRESETS[self.preset])
        values.update({k: getattr(self, k) for k in values if getattr(self, k) is not None})
        values["hidden_units"] = tuple(int(h) for h in values["hidden_units"])
        return Settings(**values)

    def resolved_params(self) -> dict[str, Any]:
        """Every hyper-parameter, with the preset's values in place of ``None``."""
        return {**self.get_params(), **asdict(self.settings())}

    def _check_params(self) -> Settings:
        self._validate_params()
        hp = self.settings()
        for name in ("n_iters", "n_inner_iters", "batch_size", "eval_every"):
            if int(getattr(hp, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(hp, name)!r}")
        for name in ("val_size", "checkpoint_every"):
            if int(getattr(self, name)) < (0 if name == "val_size" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if int(hp.patience) < 0:
            raise ValueError(f"patience must be >= 0 (0: no early stop), got {hp.patience!r}")
        if hp.lr <= 0:
            raise ValueError(f"lr must be positive, got {hp.lr!r}")
        training.check_criterion(hp.criterion)
        if hp.lr_min is not None and not 0 <= hp.lr_min <= hp.lr:
            raise ValueError(f"lr_min must be None or between 0 and lr ({hp.lr}), got {hp.lr_min!r}")
        if hp.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {hp.init!r}")
        if hp.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {hp.solver!r}")
        if hp.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {hp.activation!r}")
        if not float(self.cycle_weight) > 0:
            raise ValueError(f"cycle_weight must be positive, got {self.cycle_weight!r}")
        if int(self.conjugate_iters) < 1:
            raise ValueError(f"conjugate_iters must be positive, got {self.conjugate_iters!r}")
        return hp

    # ------------------------------------------------------------ inference
    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.shift_) / self.scale_).astype(np.float32)

    def _evaluate(self, net: StackedICNN, x: np.ndarray, index: int, what: str) -> np.ndarray:
        """Potential values ('value') or gradients ('gradient') of model ``index`` on ``x``, chunked.

        With standardised training, a potential p learned on ``z = (x - m) / s`` is
        reported as ``s^2 p(z) + <m, x>``, whose gradient ``m + s grad p(z)`` is the
        map in the data's units (so the dual W2 formula holds unchanged).
        """
        if self.settings_.standardize:
            z = self._standardise(x)
            res = self._evaluate_raw(net, z, index, what)
            if what == "gradient":
                return (self.shift_ + self.scale_ * res).astype(np.float32)
            return (self.scale_**2 * res + x @ self.shift_).astype(np.float32)
        return self._evaluate_raw(net, x, index, what)

    def _evaluate_raw(self, net: StackedICNN, x: np.ndarray, index: int, what: str) -> np.ndarray:
        one = net.select([index])
        out = []
        with torch.no_grad():
            for start in range(0, len(x), CHUNK):
                xb = torch.from_numpy(x[start : start + CHUNK]).to(self.device_).unsqueeze(0)
                res = one.gradient(xb) if what == "gradient" else one(xb)
                out.append(res[0].cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def transport(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        """Predicted perturbed cells ``T(x) = grad g(x)``."""
        index = self._perturbation_index(perturbation)
        return self._evaluate(self.g_, self._check_input(x), index, "gradient")

    def potential_g(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        """Values of g (whose gradient is the source -> target map) at ``x``, shape (n,)."""
        index = self._perturbation_index(perturbation)
        return self._evaluate(self.g_, self._check_input(x), index, "value")

    def potential_f(self, y: Any, perturbation: str | None = None) -> np.ndarray:
        """Values of the convex potential f (target side; grad f maps targets back) at ``y``.

        With ``solver="amortized"`` the network f only predicts points, so this is
        g's convex conjugate ``g*(y)``, solved numerically from f's prediction.
        """
        index = self._perturbation_index(perturbation)
        y = self._check_input(y, "y")
        if self._amortized():
            return self._conjugate(y, index)[1].astype(np.float32)
        return self._evaluate(self.f_, y, index, "value")

    def _amortized(self) -> bool:
        """g is the exact potential and f only predicts g's conjugate points (amortized, cycle)."""
        settings = getattr(self, "settings_", None)
        return (settings.solver if settings is not None else self.settings().solver) in ("amortized", "cycle")

    def _conjugate(self, y: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``argmax_x <x, y> - g(x)`` and ``g*(y)`` in the data's units (float64), chunked.

        Solved in the training units: with ``g(x) = s^2 g_z((x - m)/s) + <m, x>`` the
        maximiser is ``m + s z_hat`` with ``z_hat`` the maximiser for ``g_z`` at ``(y - m)/s``.
        """
        w = self._standardise(y) if self.settings_.standardize else y.astype(np.float32)
        g, f = self.g_.select([index]), self.f_.select([index])
        points = []
        for start in range(0, len(w), CHUNK):
            wb = torch.from_numpy(w[start : start + CHUNK]).to(self.device_).unsqueeze(0)
            with torch.no_grad():
                guess = f.gradient(wb)
            points.append(conjugate_argmax(g, wb, guess, int(self.conjugate_iters))[0].cpu().numpy())
        z_hat = np.concatenate(points).astype(np.float64)
        x_hat = self.shift_ + self.scale_ * z_hat if self.settings_.standardize else z_hat
        g_hat = self._evaluate(self.g_, x_hat.astype(np.float32), index, "value").astype(np.float64)
        return x_hat, (x_hat * y.astype(np.float64)).sum(1) - g_hat

    def w2_estimate(self, source: Any, target: Any, perturbation: str | None = None) -> float:
        """Squared W2 distance from the dual objective (the authors' ``compute_w2_distance`` x 2).

        ``W2^2 ~= E|x|^2 + E|y|^2 - 2 E_x[<x, T(x)> - f(T(x))] - 2 E_y[f(y)]``, using
        ``<x, T(x)> - f(T(x))`` as the convex conjugate f*(x). Compare with the mean
        ``transport_cost`` (the learned map's primal cost) as a consistency check.
        With ``solver="amortized"``: ``E|x|^2 + E|y|^2 - 2 E_x[g(x)] - 2 E_y[g*(y)]``
        (OTT-JAX's ``W2_dist``), with g's conjugate solved numerically.
        """
        index = self._perturbation_index(perturbation)
        x = self._check_input(source, "source").astype(np.float64)
        y = self._check_input(target, "target").astype(np.float64)
        if self._amortized():  # g is the exact potential, f stands in for its conjugate
            g_x = self._evaluate(self.g_, x.astype(np.float32), index, "value").astype(np.float64)
            g_star_y = self._conjugate(y.astype(np.float32), index)[1]
            return float((x * x).sum(1).mean() + (y * y).sum(1).mean() - 2 * g_x.mean() - 2 * g_star_y.mean())
        tx = self._evaluate(self.g_, x.astype(np.float32), index, "gradient").astype(np.float64)
        f_tx = self._evaluate(self.f_, tx.astype(np.float32), index, "value").astype(np.float64)
        f_y = self._evaluate(self.f_, y.astype(np.float32), index, "value").astype(np.float64)
        conjugate = (x * tx).sum(1) - f_tx
        return float((x * x).sum(1).mean() + (y * y).sum(1).mean() - 2 * conjugate.mean() - 2 * f_y.mean())

    def negative_weight_share(self, perturbation: str | None = None) -> float:
        """Share of g's W weights below zero (minmax penalises g towards convexity; amortized clamps it: 0)."""
        index = self._perturbation_index(perturbation)
        return float(self.g_.negative_weight_share()[index])

    # ---------------------------------------------------------- persistence
    def _get_state(self) -> dict[str, Any]:
        state = {
            **super()._get_state(),
            "perturbations_": list(self.perturbations_),
            "best_iteration_": list(self.best_iteration_),
            "n_iter_": int(self.n_iter_),
            "settings_": asdict(self.settings_),
        }
        if self.settings_.standardize:
            state.update(shift_=[float(v) for v in self.shift_], scale_=float(self.scale_))
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        settings = state.pop("settings_", None)
        super()._set_state(state)
        if settings is not None:  # models saved before presets set the widths and the solver lack them
            widths = settings.get("hidden_units") or self.hidden_units or PRESETS["paper"]["hidden_units"]
            settings["hidden_units"] = tuple(int(h) for h in widths)
            settings.setdefault("solver", self.solver or "minmax")
        self.settings_ = Settings(**settings) if settings is not None else self.settings()
        if self.settings_.standardize:
            self.shift_ = np.asarray(self.shift_, dtype=np.float64)

    def _get_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"f.{k}": v for k, v in self.f_.state_dict().items()}
        tensors.update({f"g.{k}": v for k, v in self.g_.state_dict().items()})
        return tensors

    def _set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.device_ = training.resolve_device(self.device)
        nets = []
        for prefix in ("f.", "g."):
            net = self._new_network(len(self.perturbations_), self.n_features_in_, torch.Generator())
            net.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
            nets.append(net.to(self.device_))
        self.f_, self.g_ = nets

    def _new_network(self, n_models: int, n_features: int, generator: torch.Generator) -> StackedICNN:
        return StackedICNN(
            n_models,
            n_features,
            hidden_units=list(self.settings_.hidden_units),
            negative_slope=self.negative_slope,
            init_scale=self.init_scale,
            generator=generator,
            quadratic=self.settings_.init != "uniform",
            activation=self.settings_.activation,
        )


@dataclass
class _Result:
    f: StackedICNN
    g: StackedICNN
    best_iteration: list[int]
    n_iter: int
    history: training.History


class _Trainer:
    """One CellOT training run over P perturbations: data on the device, the loop, its checkpoint."""

    def __init__(
        self,
        model: CellOT,
        hp: Settings,
        source: np.ndarray,
        targets: list[np.ndarray],
        names: list[str],
        device: torch.device,
    ) -> None:
        self.model, self.hp, self.names, self.device = model, hp, names, device
        self.P = len(targets)
        seed = int(model.seed)
        init_seed, sample_seed = np.random.SeedSequence(seed).generate_state(2)

        # Validation subsets carved from the training cells, seeded (source, then target p).
        src_train, src_val = training.carve_validation(len(source), model.val_size, seed)
        self.src = torch.from_numpy(source[src_train]).to(device)
        self.src_val = torch.from_numpy(source[src_val]).to(device)
        tgt_train, self.tgt_val = [], []
        for p, target in enumerate(targets):
            train_idx, val_idx = training.carve_validation(len(target), model.val_size, seed + 1 + p)
            tgt_train.append(target[train_idx])
            self.tgt_val.append(torch.from_numpy(target[val_idx]).to(device))
        sizes = [len(t) for t in tgt_train]
        self.tgt_sizes = torch.tensor(sizes, device=device, dtype=torch.float32)
        padded = np.zeros((self.P, max(sizes), source.shape[1]), dtype=np.float32)
        for p, t in enumerate(tgt_train):
            padded[p, : len(t)] = t
        self.tgt = torch.from_numpy(padded).to(device)
        self.rows = torch.arange(self.P, device=device).unsqueeze(1)
        # each perturbation's batch is the one it would get alone: a rare one does not shrink the others'
        self.batches = [int(min(hp.batch_size, len(self.src), n)) for n in sizes]
        self.batch = max(self.batches)  # the columns of the batched products
        self.column_weights = None  # (P, batch): 1 / b_p on row p's first b_p columns, 0 after them
        if min(self.batches) < self.batch:
            b = torch.tensor(self.batches, device=device)
            cols = torch.arange(self.batch, device=device).unsqueeze(0)
            self.column_weights = torch.where(cols < b.unsqueeze(1), 1.0 / b.unsqueeze(1).float(), 0.0)
        # a perturbation without validation cells keeps its last weights; the others select theirs
        self.validated = torch.tensor([len(self.src_val) > 0 and len(v) > 0 for v in self.tgt_val])
        self.validate = bool(self.validated.any())
        # what the kept weights are selected by, per perturbation, in the data's units
        self.scores = [training.SelectionScore(hp.criterion, self._to_data_units(v)) if ok else None
                       for v, ok in zip(self.tgt_val, self.validated.tolist())]

        init = training.make_generator(int(init_seed))  # on CPU: same weights on every device
        self.f = model._new_network(self.P, source.shape[1], init).to(device)
        self.g = model._new_network(self.P, source.shape[1], init).to(device)
        if hp.init != "uniform":
            self._init_affine(source[src_train], tgt_train)
        self.f_params, self.g_params = list(self.f.parameters()), list(self.g.parameters())
        betas = (hp.beta1, hp.beta2)
        self.opt_f = torch.optim.Adam(self.f_params, lr=hp.lr, betas=betas, fused=True)
        self.opt_g = torch.optim.Adam(self.g_params, lr=hp.lr, betas=betas, fused=True)
        self.gen = training.make_generator(int(sample_seed), device)

        # Loop state (all of it goes into the checkpoint).
        self.iteration = 0
        self.history = training.History()
        self.loss_sums = torch.zeros(2, self.P, device=device, dtype=torch.float64)
        self.loss_count = 0
        self.best_mmd = torch.full((self.P,), float("inf"), dtype=torch.float64)
        self.best_iteration = torch.zeros(self.P, dtype=torch.long)
        self.stalled = torch.zeros(self.P, dtype=torch.long)
        self.best_f = {k: v.detach().clone() for k, v in self.f.state_dict().items()}
        self.best_g = {k: v.detach().clone() for k, v in self.g.state_dict().items()}

    def _init_affine(self, source: np.ndarray, targets: list[np.ndarray]) -> None:
        """g starts at the identity or Gaussian map, f at its convex conjugate (the inverse map)."""
        d = source.shape[1]
        if self.hp.init == "identity":
            mats = [(np.eye(d), np.zeros(d))] * self.P
        else:
            mats = [gaussian_map(source, t, self.hp.gaussian_ridge, relative=False) for t in targets]
        m = torch.tensor(np.stack([a for a, _ in mats]))
        c = torch.tensor(np.stack([b for _, b in mats]))
        m_inv = torch.linalg.inv(m)
        # conjugate of 1/2 x'Mx + c'x is 1/2 (y - c)' M^-1 (y - c): gradient M^-1 y - M^-1 c
        self.g.init_affine_(m.to(self.device), c.to(self.device))
        self.f.init_affine_(m_inv.to(self.device), -(m_inv @ c.unsqueeze(-1)).squeeze(-1).to(self.device))

    # ------------------------------------------------------------ sampling
    def _source_batch(self) -> torch.Tensor:
        idx = torch.randint(0, len(self.src), (self.P, self.batch), generator=self.gen, device=self.device)
        return self.src[idx]

    def _target_batch(self) -> torch.Tensor:
        u = torch.rand((self.P, self.batch), generator=self.gen, device=self.device)
        idx = (u * self.tgt_sizes.unsqueeze(1)).long()
        idx = torch.minimum(idx, self.tgt_sizes.long().unsqueeze(1) - 1)
        return self.tgt[self.rows, idx]

    def _mean(self, values: torch.Tensor) -> torch.Tensor:
        """Per perturbation, the mean of a (P, batch) tensor over its own batch (its first b_p columns)."""
        if self.column_weights is None:
            return values.mean(1)
        return (values * self.column_weights).sum(1)

    # ---------------------------------------------------------------- steps
    def _g_step(self) -> torch.Tensor:
        x = self._source_batch()
        tx = self.g.gradient(x)
        loss = self._mean(self.f(tx) - (x * tx).sum(-1))
        if self.model.fnorm_penalty > 0:
            loss = loss + self.model.fnorm_penalty * self.g.negative_weight_penalty()
        grads = torch.autograd.grad(loss.sum(), self.g_params)
        for param, grad in zip(self.g_params, grads):
            param.grad = grad.contiguous()  # fused CPU Adam misreads strided gradients
        self.opt_g.step()
        return loss.detach()

    def _f_step(self, y: torch.Tensor) -> torch.Tensor:
        x = self._source_batch()
        with torch.no_grad():
            tx = self.g.gradient(x)
        values = self.f(torch.cat([y, tx], dim=1))
        loss = self._mean(values[:, : self.batch]) - self._mean(values[:, self.batch :])
        grads = torch.autograd.grad(loss.sum(), self.f_params)
        for param, grad in zip(self.f_params, grads):
            param.grad = grad.contiguous()  # fused CPU Adam misreads strided gradients
        self.opt_f.step()
        self.f.clamp_weights_()
        return loss.detach()

    def _iterate(self) -> None:
        y = self._target_batch()
        for _ in range(self.hp.n_inner_iters):
            loss_g = self._g_step()
        loss_f = self._f_step(y)
        self.loss_sums[0] += loss_g
        self.loss_sums[1] += loss_f
        self.loss_count += 1

    # ----------------------------------------------------------- validation
    @torch.no_grad()
    def _evaluate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Log mean losses, the validation score and the dual W2; keep improved weights; count stalls.

        Returns the validation score per perturbation (NaN without validation cells) and the mean losses (2, P)."""
        losses = (self.loss_sums / max(self.loss_count, 1)).cpu()
        if not torch.isfinite(losses).all():
            raise FloatingPointError(
                f"CellOT training diverged (non-finite loss) by iteration {self.iteration}; "
                "lower lr or standardise the features"
            )
        self.loss_sums.zero_()
        self.loss_count = 0
        score = torch.full((self.P,), float("nan"), dtype=torch.float64)
        w2 = torch.full((self.P,), float("nan"), dtype=torch.float64)
        if self.validate:
            x = self.src_val.unsqueeze(0).expand(self.P, -1, -1)
            tx = self.g.gradient(x)
            source_dual = self._source_dual(x, tx)
            x_sq = (self.src_val**2).sum(-1).mean()
            scale, _ = self._units()
            for p, y in enumerate(self.tgt_val):
                if not self.validated[p]:
                    continue
                # in the data's units, where the criterion's bandwidths and distances are meant
                score[p] = self.scores[p](self._to_data_units(tx[p]))
                target_dual = self._target_dual(p, y)
                w2[p] = float(x_sq + (y**2).sum(-1).mean() - 2 * source_dual[p].mean() - 2 * target_dual.mean())
                if scale is not None:  # W2 scales with the data; it does not move with them
                    w2[p] *= scale**2
            improved = score < self.best_mmd
            self.best_mmd = torch.where(improved, score, self.best_mmd)
            self.best_iteration[improved] = self.iteration
            self.stalled = torch.where(improved, 0, self.stalled + 1)
            mask = improved.to(self.device)
            for best, net in ((self.best_f, self.f), (self.best_g, self.g)):
                for key, value in net.state_dict().items():
                    view = mask.view(-1, *([1] * (value.dim() - 1)))
                    best[key] = torch.where(view, value, best[key])
        for p, name in enumerate(self.names):
            self.history.log(
                iteration=self.iteration,
                perturbation=name,
                loss_g=float(losses[0, p]),
                loss_f=float(losses[1, p]),
                **{training.CRITERIA[self.hp.criterion]: float(score[p])},
                val_w2=float(w2[p]),
            )
        return score, losses

    def _source_dual(self, x: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        """The dual's source term (P, n): f's conjugate at x, ``<x, T(x)> - f(T(x))``."""
        return (x * tx).sum(-1) - self.f(tx)

    def _target_dual(self, p: int, y: torch.Tensor) -> torch.Tensor:
        """The dual's target term (n,) of perturbation p: ``f(y)``."""
        return self.f.select([p])(y.unsqueeze(0))[0]

    def _to_data_units(self, z: torch.Tensor) -> torch.Tensor:
        """Cells in training units back in the data's units (unchanged without standardisation)."""
        scale, shift = self._units()
        return z if scale is None else z * scale + shift

    def _set_learning_rate(self, iteration: int) -> None:
        """Cosine decay from ``lr`` to ``lr_min`` over ``n_iters`` (a function of the iteration: resumes exactly)."""
        if self.hp.lr_min is None:
            return
        progress = min(iteration / max(int(self.hp.n_iters), 1), 1.0)
        lr = self.hp.lr_min + 0.5 * (self.hp.lr - self.hp.lr_min) * (1 + math.cos(math.pi * progress))
        for optimizer in (self.opt_f, self.opt_g):
            for group in optimizer.param_groups:
                group["lr"] = lr

    def _units(self) -> tuple[float | None, torch.Tensor | None]:
        """Scale and shift back to the data's units, or (None, None) without standardisation."""
        if not self.hp.standardize:
            return None, None
        shift = torch.as_tensor(self.model.shift_, dtype=torch.float32, device=self.device)
        return float(self.model.scale_), shift

    def _converged(self) -> bool:
        patience = int(self.hp.patience)
        # a perturbation without validation cells never stalls: it trains for n_iters, as it would alone
        return patience > 0 and bool(self.validated.all()) and bool((self.stalled >= patience).all())

    # ----------------------------------------------------------- checkpoint
    def _state(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "f": self.f.state_dict(),
            "g": self.g.state_dict(),
            "opt_f": self.opt_f.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "rng": training.generator_state(self.gen),
            "history": self.history.rows,
            "loss_sums": self.loss_sums,
            "loss_count": self.loss_count,
            "best_mmd": self.best_mmd,
            "best_iteration": self.best_iteration,
            "stalled": self.stalled,
            "best_f": self.best_f,
            "best_g": self.best_g,
            "progress": self.progress.state_dict(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        dev = self.device
        self.iteration = int(state["iteration"])
        self.f.load_state_dict(state["f"])
        self.g.load_state_dict(state["g"])
        self.opt_f.load_state_dict(state["opt_f"])
        self.opt_g.load_state_dict(state["opt_g"])
        training.optimizer_to(self.opt_f, dev)
        training.optimizer_to(self.opt_g, dev)
        training.restore_generator(self.gen, state["rng"])
        self.history = training.History(list(state["history"]))
        self.loss_sums = state["loss_sums"].to(dev)
        self.loss_count = int(state["loss_count"])
        self.best_mmd = state["best_mmd"]
        self.best_iteration = state["best_iteration"]
        self.stalled = state["stalled"]
        self.best_f = {k: v.to(dev) for k, v in state["best_f"].items()}
        self.best_g = {k: v.to(dev) for k, v in state["best_g"].items()}

    # ----------------------------------------------------------------- loop
    def run(self, checkpoint: training.Checkpoint) -> _Result:
        state = checkpoint.load()
        if state is not None:
            self._restore(state)
        n_iters, eval_every = int(self.hp.n_iters), int(self.hp.eval_every)
        # log lines, the live history and a clean stop on SIGTERM/SIGINT; patience stays in _converged
        self.progress = training.Progress("cellot", n_iters, history=self.history,
                                          score_name=training.CRITERIA[self.hp.criterion])
        if state is not None:
            self.progress.load_state_dict(state.get("progress"))
        with self.progress:
            for it in self.progress.iterations(self.iteration, n_iters, on_stop=lambda _: checkpoint.save(self._state())):
                self._set_learning_rate(it - 1)
                self._iterate()
                self.iteration = it
                if it % eval_every == 0 or it == n_iters:
                    score, losses = self._evaluate()
                    loss_means = {"loss_g": float(losses[0].mean()), "loss_f": float(losses[1].mean())}
                    self.progress.record(it, [], score=score.numpy(), losses=loss_means)
                    if self._converged():
                        break
                if it < n_iters and checkpoint.due(it):
                    checkpoint.save(self._state())
        if self.validate and self.hp.keep_best:
            if not self.validated.all():  # those without validation cells keep their last weights
                last = (~self.validated).to(self.device)
                for best, net in ((self.best_f, self.f), (self.best_g, self.g)):
                    for key, value in net.state_dict().items():
                        best[key] = torch.where(last.view(-1, *([1] * (value.dim() - 1))), value, best[key])
                self.best_iteration[~self.validated] = self.iteration
            self.f.load_state_dict(self.best_f)
            self.g.load_state_dict(self.best_g)
            best_iteration = [int(i) for i in self.best_iteration]
        else:
            best_iteration = [self.iteration] * self.P
        checkpoint.clear()
        for net in (self.f, self.g):
            net.requires_grad_(False)
        return _Result(self.f, self.g, best_iteration, self.iteration, self.history)


class _AmortizedTrainer(_Trainer):
    """Amos (2023) / OTT-JAX ``W2NeuralDual``: g on the dual with a solved conjugate, f regresses onto it."""

    def __init__(self, model: CellOT, *args: Any, **kwargs: Any) -> None:
        super().__init__(model, *args, **kwargs)
        self.conjugate_iters = int(model.conjugate_iters)

    def _iterate(self) -> None:
        x, y = self._source_batch(), self._target_batch()
        guess = self.f.gradient(y)  # amortised argmax, differentiable in f's weights
        x_hat = conjugate_argmax(self.g, y, guess.detach(), self.conjugate_iters)
        self.loss_sums[0] += self._dual_step(x, y, x_hat)
        self.loss_sums[1] += self._regression_step(guess, x_hat)
        self.loss_count += 1

    def _dual_step(self, x: torch.Tensor, y: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """One Adam step on ``mean g(x) + mean[<x_hat, y> - g(x_hat)]``, then clamp g convex."""
        values = self.g(torch.cat([x, x_hat], dim=1))
        g_star = (x_hat * y).sum(-1) - values[:, self.batch :]
        loss = self._mean(values[:, : self.batch]) + self._mean(g_star)
        self._step(loss, self.g_params, self.opt_g)
        self.g.clamp_weights_()
        return loss.detach()

    def _regression_step(self, guess: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """One Adam step on the amortisation loss ``mean ||grad f(y) - x_hat||^2`` (per coordinate)."""
        sq = (guess - x_hat).square()
        loss = sq.mean((1, 2)) if self.column_weights is None else self._mean(sq.mean(2))
        self._step(loss, self.f_params, self.opt_f)
        return loss.detach()

    @staticmethod
    def _step(loss: torch.Tensor, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> None:
        grads = torch.autograd.grad(loss.sum(), params)
        for param, grad in zip(params, grads):
            param.grad = grad.contiguous()  # fused CPU Adam misreads strided gradients
        optimizer.step()

    def _source_dual(self, x: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        """g(x): g is the exact potential here."""
        return self.g(x)

    def _target_dual(self, p: int, y: torch.Tensor) -> torch.Tensor:
        """g*(y), solved from f's prediction."""
        g, f = self.g.select([p]), self.f.select([p])
        y = y.unsqueeze(0)
        x_hat = conjugate_argmax(g, y, f.gradient(y), self.conjugate_iters)
        return ((x_hat * y).sum(-1) - g(x_hat))[0]


class _CycleTrainer(_Trainer):
    """W2GN (Korotin et al., ICLR 2021): one joint descent instead of a min-max, with a cycle penalty.

    g (``T = grad g``) and f (``grad f`` ~ T's inverse) minimise together
    ``mean g(x) + mean[<x_hat, y> - g(x_hat)] + cycle_weight * mean |grad g(grad f(y)) - y|^2``
    with ``x_hat = grad f(y)``: the first two terms are the W2 dual with g's
    conjugate at y evaluated at f's guess of the maximiser (held fixed there:
    descending the dual in f would move the guess away from the maximiser),
    and the cycle term trains f towards the inverse of T, where the guess is
    exact. g's ``W`` are clamped non-negative after
    every step (g stays convex); f is not constrained, it only predicts points.
    One step updates both from one source and one target batch (about one
    minmax g step's cost; the minmax schedule spends ``n_inner_iters + 1``).
    """

    def __init__(self, model: CellOT, *args: Any, **kwargs: Any) -> None:
        super().__init__(model, *args, **kwargs)
        self.cycle_weight = float(model.cycle_weight)

    def _iterate(self) -> None:
        x, y = self._source_batch(), self._target_batch()
        x_hat = self.f.gradient(y)
        # the dual sees f's guess as a point (envelope theorem: where it is the maximiser, g's gradient
        # is E grad_w g(x) - E grad_w g(x_hat)); f learns only from the cycle, towards that maximiser
        values = self.g(torch.cat([x, x_hat.detach()], dim=1))
        dual = self._mean(values[:, : self.batch]) + self._mean((x_hat.detach() * y).sum(-1) - values[:, self.batch :])
        cycle = self._mean((self.g.gradient(x_hat) - y).square().sum(-1))
        loss = dual + self.cycle_weight * cycle
        params = self.g_params + self.f_params
        grads = torch.autograd.grad(loss.sum(), params)
        for param, grad in zip(params, grads):
            param.grad = grad.contiguous()  # fused CPU Adam misreads strided gradients
        self.opt_g.step()
        self.opt_f.step()
        self.g.clamp_weights_()
        self.loss_sums[0] += dual.detach()
        self.loss_sums[1] += cycle.detach()
        self.loss_count += 1

    def _source_dual(self, x: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        """g(x): g is the exact potential here."""
        return self.g(x)

    def _target_dual(self, p: int, y: torch.Tensor) -> torch.Tensor:
        """g*(y) at f's guess of the maximiser (a lower bound; exact when the cycle closes)."""
        g, f = self.g.select([p]), self.f.select([p])
        x_hat = f.gradient(y.unsqueeze(0))
        return ((x_hat * y.unsqueeze(0)).sum(-1) - g(x_hat))[0]


def _conjugate_objective(
    net: StackedICNN, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``net(x) - <x, y>`` (P, n), its gradient in x (P, n, d), and ``|net(x)| + |<x, y>|`` (P, n).

    The objective is minimised by the conjugate's argmax; the last term bounds
    the rounding error of the difference (what float32 can resolve).
    """
    value, grad = net.value_and_gradient(x)
    dot = (x * y).sum(-1)
    return value - dot, grad - y, value.abs() + dot.abs()


def _lbfgs_direction(grad: torch.Tensor, pairs: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
    """L-BFGS two-loop recursion, each cell with its own curvature pairs ``(s, r, 1/<s, r>)``."""
    q, alphas = grad, []
    for s, r, rho in reversed(pairs):
        alpha = rho * (s * q).sum(-1, keepdim=True)
        q = q - alpha * r
        alphas.append(alpha)
    if pairs:  # initial Hessian <s, r> / <r, r> from the newest pair (1 where it was skipped)
        s, r, _ = pairs[-1]
        rr = (r * r).sum(-1, keepdim=True)
        q = q * torch.where(rr > 0, (s * r).sum(-1, keepdim=True) / rr.clamp_min(1e-30), 1.0)
    for (s, r, rho), alpha in zip(pairs, reversed(alphas)):
        q = q + s * (alpha - rho * (r * q).sum(-1, keepdim=True))
    return -q


@torch.no_grad()
def conjugate_argmax(net: StackedICNN, y: torch.Tensor, x0: torch.Tensor, max_iter: int) -> torch.Tensor:
    """Per cell, ``argmax_x <x, y> - net(x)`` (= grad of net's convex conjugate at y), shape (P, n, d).

    Batched L-BFGS started at ``x0`` (the amortisation model's prediction):
    every cell is its own problem with its own curvature pairs and its own
    backtracking (Armijo) step; where the decrease a step predicts is below
    what float32 resolves (``RESOLUTION``) the unit step is taken if it shrinks
    the gradient. A cell stops once its gradient norm is below
    ``CONJUGATE_TOL`` or when no step is accepted; all stop after ``max_iter``
    iterations.
    """
    x = x0.detach().clone()
    value, grad, size = _conjugate_objective(net, x, y)
    active = grad.norm(dim=-1, keepdim=True) > CONJUGATE_TOL
    pairs: list[tuple[torch.Tensor, ...]] = []
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        direction = _lbfgs_direction(grad, pairs)
        slope = (direction * grad).sum(-1, keepdim=True)
        uphill = slope >= 0  # not a descent direction: fall back to steepest descent
        direction = torch.where(uphill, -grad, direction)
        slope = torch.where(uphill, -(grad * grad).sum(-1, keepdim=True), slope)
        # near the optimum float32 cannot resolve the decrease: judge the unit step by the gradient
        floor = RESOLUTION * size.unsqueeze(-1)
        fine = -slope <= floor
        grad_norm = grad.norm(dim=-1, keepdim=True)
        step = torch.ones_like(slope)
        for _ in range(CONJUGATE_LINESEARCH):
            x_new = x + step * direction
            value_new, grad_new, size_new = _conjugate_objective(net, x_new, y)
            armijo = (value_new <= value + ARMIJO * (step * slope).squeeze(-1)).unsqueeze(-1)
            ok = torch.where(fine, grad_new.norm(dim=-1, keepdim=True) < grad_norm, armijo)
            lost = -step * slope <= floor  # halved below what float32 resolves: give up
            if bool((ok | fine | lost | ~active).all()):
                break
            step = torch.where(ok | fine, step, step / 2)
        moved = ok & active
        x_new = torch.where(moved, x_new, x)
        value_new = torch.where(moved.squeeze(-1), value_new, value)
        size_new = torch.where(moved.squeeze(-1), size_new, size)
        grad_new = torch.where(moved, grad_new, grad)
        s, r = x_new - x, grad_new - grad
        sr = (s * r).sum(-1, keepdim=True)
        curved = sr > 1e-10  # keep only pairs of positive curvature
        pairs.append((torch.where(curved, s, 0.0), torch.where(curved, r, 0.0),
                      torch.where(curved, 1.0 / sr.clamp_min(1e-10), 0.0)))
        pairs = pairs[-CONJUGATE_HISTORY:]
        x, value, grad, size = x_new, value_new, grad_new, size_new
        active = moved & (grad.norm(dim=-1, keepdim=True) > CONJUGATE_TOL)
    return x
