"""CellOT's solvers: the loop that trains the stacked potentials f and g of P perturbations.

``_Trainer`` is the authors' min-max schedule, ``_AmortizedTrainer`` the amortised
conjugate and ``_CycleTrainer`` the cycle-consistent dual (perturbot.models.cellot
says what each is). Each keeps the data on the device, validates, keeps the best
weights and checkpoints; the estimator, ``CellOT``, resolves the settings and
hands them over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from perturbot import checkpoints, training, validation
from perturbot.models.base import PerturbationModel
from perturbot.models.conjugate import conjugate_argmax
from perturbot.models.gaussian_ot import gaussian_map
from perturbot.nn.icnn import StackedICNN


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
    #: what the kept weights are selected by on the validation cells (``validation.CRITERIA``)
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
        model: PerturbationModel,
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
        src_train, src_val = validation.carve_validation(len(source), model.val_size, seed)
        self.src = torch.from_numpy(source[src_train]).to(device)
        self.src_val = torch.from_numpy(source[src_val]).to(device)
        tgt_train, self.tgt_val = [], []
        for p, target in enumerate(targets):
            train_idx, val_idx = validation.carve_validation(len(target), model.val_size, seed + 1 + p)
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
        self.scores = [validation.SelectionScore(hp.criterion, self._to_data_units(v)) if ok else None
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
                **{validation.CRITERIA[self.hp.criterion]: float(score[p])},
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
            "rng": checkpoints.generator_state(self.gen),
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
        checkpoints.optimizer_to(self.opt_f, dev)
        checkpoints.optimizer_to(self.opt_g, dev)
        checkpoints.restore_generator(self.gen, state["rng"])
        self.history = training.History(list(state["history"]))
        self.loss_sums = state["loss_sums"].to(dev)
        self.loss_count = int(state["loss_count"])
        self.best_mmd = state["best_mmd"]
        self.best_iteration = state["best_iteration"]
        self.stalled = state["stalled"]
        self.best_f = {k: v.to(dev) for k, v in state["best_f"].items()}
        self.best_g = {k: v.to(dev) for k, v in state["best_g"].items()}

    # ----------------------------------------------------------------- loop
    def run(self, checkpoint: checkpoints.Checkpoint) -> _Result:
        state = checkpoint.load()
        if state is not None:
            self._restore(state)
        n_iters, eval_every = int(self.hp.n_iters), int(self.hp.eval_every)
        # log lines, the live history and a clean stop on SIGTERM/SIGINT; patience stays in _converged
        self.progress = training.Progress("cellot", n_iters, history=self.history,
                                          score_name=validation.CRITERIA[self.hp.criterion])
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

    def __init__(self, model: PerturbationModel, *args: Any, **kwargs: Any) -> None:
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

    def __init__(self, model: PerturbationModel, *args: Any, **kwargs: Any) -> None:
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
