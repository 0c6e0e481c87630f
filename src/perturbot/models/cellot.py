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
(Adam is element-wise) and kept best weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from perturbot import training
from perturbot.models.base import PerturbationModel, as_float_array
from perturbot.nn.icnn import StackedICNN

#: Rows per forward pass at inference, to bound memory on large inputs.
CHUNK = 16384


class CellOT(PerturbationModel):
    """Neural W2 optimal transport between control and perturbed cells (see module docstring)."""

    name = "cellot"
    multi_perturbation = True

    def __init__(
        self,
        hidden_units: Sequence[int] = (64, 64, 64, 64),
        n_iters: int = 100_000,
        n_inner_iters: int = 10,
        batch_size: int = 256,
        lr: float = 1e-4,
        beta1: float = 0.5,
        beta2: float = 0.9,
        fnorm_penalty: float = 1.0,
        negative_slope: float = 0.2,
        init_scale: float = 0.1,
        eval_every: int = 250,
        val_size: int = 500,
        patience: int | None = None,
        checkpoint_every: int = 1000,
        seed: int = 0,
        device: str = "auto",
    ) -> None:
        self.hidden_units = hidden_units
        self.n_iters = n_iters
        self.n_inner_iters = n_inner_iters
        self.batch_size = batch_size
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.fnorm_penalty = fnorm_penalty
        self.negative_slope = negative_slope
        self.init_scale = init_scale
        self.eval_every = eval_every
        self.val_size = val_size
        self.patience = patience
        self.checkpoint_every = checkpoint_every
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------------ fit
    def fit_many(
        self, source: Any, targets: Mapping[str, Any], *, checkpoint: str | None = None
    ) -> "CellOT":
        """Learn one map per perturbation, all in one batched training loop."""
        self._check_params()
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
        trainer = _Trainer(self, source, tgts, names, self.device_)
        result = trainer.run(training.Checkpoint(checkpoint, every=self.checkpoint_every))
        self.n_features_in_ = source.shape[1]
        self.perturbations_ = names
        self.f_, self.g_ = result.f, result.g
        self.best_iteration_ = result.best_iteration
        self.n_iter_ = result.n_iter
        self.history_ = result.history.to_frame()
        return self

    def _check_params(self) -> None:
        positive = ("n_iters", "n_inner_iters", "batch_size", "eval_every", "val_size", "checkpoint_every")
        for name in positive:
            if int(getattr(self, name)) < (0 if name == "val_size" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.patience is not None and int(self.patience) < 1:
            raise ValueError(f"patience must be None or >= 1, got {self.patience!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")

    # ------------------------------------------------------------ inference
    def _index(self, perturbation: str | None) -> int:
        self._check_fitted()
        if perturbation is None:
            if len(self.perturbations_) != 1:
                raise ValueError(
                    f"this model holds {len(self.perturbations_)} perturbations; name one of "
                    f"{self.perturbations_}"
                )
            return 0
        try:
            return self.perturbations_.index(str(perturbation))
        except ValueError:
            raise ValueError(
                f"unknown perturbation {perturbation!r}; fitted ones: {self.perturbations_}"
            ) from None

    def _evaluate(self, net: StackedICNN, x: np.ndarray, index: int, what: str) -> np.ndarray:
        """Potential values ('value') or gradients ('gradient') of model ``index`` on ``x``, chunked."""
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
        index = self._index(perturbation)
        return self._evaluate(self.g_, self._check_input(x), index, "gradient")

    def potential_g(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        """Values of g (whose gradient is the source -> target map) at ``x``, shape (n,)."""
        index = self._index(perturbation)
        return self._evaluate(self.g_, self._check_input(x), index, "value")

    def potential_f(self, y: Any, perturbation: str | None = None) -> np.ndarray:
        """Values of the convex potential f (target side; grad f maps targets back) at ``y``."""
        index = self._index(perturbation)
        return self._evaluate(self.f_, self._check_input(y, "y"), index, "value")

    def w2_estimate(self, source: Any, target: Any, perturbation: str | None = None) -> float:
        """Squared W2 distance from the dual objective (the authors' ``compute_w2_distance`` x 2).

        ``W2^2 ~= E|x|^2 + E|y|^2 - 2 E_x[<x, T(x)> - f(T(x))] - 2 E_y[f(y)]``, using
        ``<x, T(x)> - f(T(x))`` as the convex conjugate f*(x). Compare with the mean
        ``transport_cost`` (the learned map's primal cost) as a consistency check.
        """
        index = self._index(perturbation)
        x = self._check_input(source, "source").astype(np.float64)
        y = self._check_input(target, "target").astype(np.float64)
        tx = self._evaluate(self.g_, x.astype(np.float32), index, "gradient").astype(np.float64)
        f_tx = self._evaluate(self.f_, tx.astype(np.float32), index, "value").astype(np.float64)
        f_y = self._evaluate(self.f_, y.astype(np.float32), index, "value").astype(np.float64)
        conjugate = (x * tx).sum(1) - f_tx
        return float((x * x).sum(1).mean() + (y * y).sum(1).mean() - 2 * conjugate.mean() - 2 * f_y.mean())

    def negative_weight_share(self, perturbation: str | None = None) -> float:
        """Share of g's W weights below zero (g is penalised, not clamped, towards convexity)."""
        index = self._index(perturbation)
        return float(self.g_.negative_weight_share()[index])

    # ---------------------------------------------------------- persistence
    def _get_state(self) -> dict[str, Any]:
        return {
            **super()._get_state(),
            "perturbations_": list(self.perturbations_),
            "best_iteration_": list(self.best_iteration_),
            "n_iter_": int(self.n_iter_),
        }

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
            hidden_units=list(self.hidden_units),
            negative_slope=self.negative_slope,
            init_scale=self.init_scale,
            generator=generator,
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
        source: np.ndarray,
        targets: list[np.ndarray],
        names: list[str],
        device: torch.device,
    ) -> None:
        self.model, self.names, self.device = model, names, device
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
        self.batch = int(min(model.batch_size, len(self.src), *sizes))
        self.validate = len(self.src_val) > 0 and all(len(v) > 0 for v in self.tgt_val)

        init = training.make_generator(int(init_seed))  # on CPU: same weights on every device
        self.f = model._new_network(self.P, source.shape[1], init).to(device)
        self.g = model._new_network(self.P, source.shape[1], init).to(device)
        self.f_params, self.g_params = list(self.f.parameters()), list(self.g.parameters())
        betas = (model.beta1, model.beta2)
        self.opt_f = torch.optim.Adam(self.f_params, lr=model.lr, betas=betas, fused=True)
        self.opt_g = torch.optim.Adam(self.g_params, lr=model.lr, betas=betas, fused=True)
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
        self.meta = {
            "perturbations": list(names),
            "n_features": int(source.shape[1]),
            "n_cells": [len(source)] + [len(t) for t in targets],
            "hidden_units": [int(h) for h in model.hidden_units],
            "seed": seed,
        }

    # ------------------------------------------------------------ sampling
    def _source_batch(self) -> torch.Tensor:
        idx = torch.randint(0, len(self.src), (self.P, self.batch), generator=self.gen, device=self.device)
        return self.src[idx]

    def _target_batch(self) -> torch.Tensor:
        u = torch.rand((self.P, self.batch), generator=self.gen, device=self.device)
        idx = (u * self.tgt_sizes.unsqueeze(1)).long()
        idx = torch.minimum(idx, self.tgt_sizes.long().unsqueeze(1) - 1)
        return self.tgt[self.rows, idx]

    # ---------------------------------------------------------------- steps
    def _g_step(self) -> torch.Tensor:
        x = self._source_batch()
        tx = self.g.gradient(x)
        loss = (self.f(tx) - (x * tx).sum(-1)).mean(1)
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
        loss = values[:, : self.batch].mean(1) - values[:, self.batch :].mean(1)
        grads = torch.autograd.grad(loss.sum(), self.f_params)
        for param, grad in zip(self.f_params, grads):
            param.grad = grad.contiguous()  # fused CPU Adam misreads strided gradients
        self.opt_f.step()
        self.f.clamp_weights_()
        return loss.detach()

    def _iterate(self) -> None:
        y = self._target_batch()
        for _ in range(self.model.n_inner_iters):
            loss_g = self._g_step()
        loss_f = self._f_step(y)
        self.loss_sums[0] += loss_g
        self.loss_sums[1] += loss_f
        self.loss_count += 1

    # ----------------------------------------------------------- validation
    @torch.no_grad()
    def _evaluate(self) -> None:
        """Log mean losses and validation MMD / W2; keep improved weights; count stalls."""
        losses = (self.loss_sums / max(self.loss_count, 1)).cpu()
        if not torch.isfinite(losses).all():
            raise FloatingPointError(
                f"CellOT training diverged (non-finite loss) by iteration {self.iteration}; "
                "lower lr or standardise the features"
            )
        self.loss_sums.zero_()
        self.loss_count = 0
        mmd = torch.full((self.P,), float("nan"), dtype=torch.float64)
        w2 = torch.full((self.P,), float("nan"), dtype=torch.float64)
        if self.validate:
            x = self.src_val.unsqueeze(0).expand(self.P, -1, -1)
            tx = self.g.gradient(x)
            f_tx = self.f(tx)
            conj = (x * tx).sum(-1) - f_tx
            x_sq = (self.src_val**2).sum(-1).mean()
            for p, y in enumerate(self.tgt_val):
                mmd[p] = float(training.mmd_rbf_torch(tx[p], y))
                f_y = self.f.select([p])(y.unsqueeze(0))[0]
                w2[p] = float(x_sq + (y**2).sum(-1).mean() - 2 * conj[p].mean() - 2 * f_y.mean())
            improved = mmd < self.best_mmd
            self.best_mmd = torch.where(improved, mmd, self.best_mmd)
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
                val_mmd=float(mmd[p]),
                val_w2=float(w2[p]),
            )

    def _converged(self) -> bool:
        patience = self.model.patience
        return patience is not None and self.validate and bool((self.stalled >= int(patience)).all())

    # ----------------------------------------------------------- checkpoint
    def _state(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
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
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if state["meta"] != self.meta:
            raise ValueError(
                "the checkpoint belongs to another training run (different data, perturbations, "
                f"network or seed): {state['meta']} vs {self.meta}; delete it to start afresh"
            )
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
        n_iters, eval_every = int(self.model.n_iters), int(self.model.eval_every)
        while self.iteration < n_iters:
            self._iterate()
            self.iteration += 1
            if self.iteration % eval_every == 0 or self.iteration == n_iters:
                self._evaluate()
                if self._converged():
                    break
            if self.iteration < n_iters and checkpoint.due(self.iteration):
                checkpoint.save(self._state())
        if self.validate:
            self.f.load_state_dict(self.best_f)
            self.g.load_state_dict(self.best_g)
            best_iteration = [int(i) for i in self.best_iteration]
        else:
            best_iteration = [self.iteration] * self.P
        checkpoint.clear()
        for net in (self.f, self.g):
            net.requires_grad_(False)
        return _Result(self.f, self.g, best_iteration, self.iteration, self.history)
