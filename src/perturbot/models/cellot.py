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

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from perturbot import checkpoints, training, validation
from perturbot.fingerprint import fit_arrays
from perturbot.models.base import PerturbationModel, as_float_array
from perturbot.models.cellot_solvers import Settings, _AmortizedTrainer, _CycleTrainer, _Trainer
from perturbot.models.conjugate import conjugate_argmax
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
        "patience": Interval(0), "criterion": Options(validation.CRITERIA), "lr_min": Interval(0), "checkpoint_every": Interval(1),
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
        ckpt = checkpoints.Checkpoint(checkpoint, every=self.checkpoint_every, model=self,
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
        validation.check_criterion(hp.criterion)
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
