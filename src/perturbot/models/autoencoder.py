"""The autoencoder shared by the latent-space models, and its training loop.

:class:`ReconstructionModel` holds what the plain and the conditional
autoencoder share: class-balanced minibatches, per-feature MSE, Adam with a
step-decayed learning rate, the lowest-validation-loss weights kept, resumable
checkpoints, and persistence of the network. :class:`AutoEncoder` is the plain
one; it encodes cells for scGen and for OT models run in latent space
(:mod:`perturbot.latent`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perturbot.models.base import PerturbationModel, as_float_array
from perturbot.params import Interval
from perturbot.nn.autoencoder import MLPAutoencoder
from perturbot.checkpoints import Checkpoint, generator_state, optimizer_to, restore_generator
from perturbot.training import Progress, make_generator, resolve_device, seed_everything
from perturbot.validation import carve_validation

#: The CellOT paper's autoencoder for 4i features (``AutoEncoder(**FEATURES_PRESET)``):
#: small network, dropout, constant learning rate without weight decay, validated every 500 steps.
FEATURES_PRESET: dict[str, Any] = {
    "hidden_units": (32, 32),
    "latent_dim": 8,
    "dropout": 0.05,
    "weight_decay": 0.0,
    "lr_step": 0,
    "n_iters": 100_000,
    "eval_every": 500,
}

_CHUNK = 16_384  # rows per forward pass at inference, bounds memory on large datasets

#: The CellOT paper's scRNA-seq validation cadence: what ``eval_every=None`` means for a fixed budget (``patience=None``).
PAPER_EVAL_EVERY = 2_500
#: With early stopping, ``eval_every=None`` validates at least this often (and at least 20 times per budget).
EARLY_STOPPING_EVAL_EVERY = 500


def default_eval_every(n_iters: int, patience: int | None) -> int:
    """Iterations between validations when ``eval_every`` is ``None``.

    A fixed budget (``patience=None``, the papers') keeps the paper's 2,500, so the weights
    kept are the ones the paper's schedule would keep. With early stopping the cadence scales
    with the budget: ``n_iters // 20``, at most 500, so that ``patience`` validations
    without gain are at most ``500 * patience`` iterations (5,000 at the workflow's default
    patience of 10) and at most half a short budget. A run whose best comes early then
    stops soon after it, instead of up to ``2,500 * patience`` iterations later.
    """
    if patience is None:
        return PAPER_EVAL_EVERY
    return max(1, min(EARLY_STOPPING_EVAL_EVERY, int(n_iters) // 20))


def first_validation(eval_every: int | None) -> int:
    """The first iteration validated: the paper's 2,500 when the cadence follows the budget, else ``eval_every``.

    Early stopping validates more often than the paper, but keeps no weights from before
    the paper's first validation: on the Kang PBMCs (one cell type held out) the
    validation loss is lowest at 500 iterations, yet a latent space from those weights
    closes about half as much of the gap between control and stimulated cells (marker-gene
    MMD) as the one from 2,500 iterations (docs/models/baselines.md).
    """
    if eval_every is None:
        return PAPER_EVAL_EVERY
    return int(eval_every)


class BalancedSampler:
    """Minibatches with every class equally likely, then a uniform cell within the class.

    Keeps a large control population from drowning the perturbed cells, which the
    W1-OT paper found necessary for scGen's autoencoder.
    """

    def __init__(self, labels: torch.Tensor) -> None:
        order = torch.argsort(labels, stable=True)
        classes, counts = torch.unique(labels[order], return_counts=True)
        self.order = order
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts
        self.n_classes = len(classes)

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        device = self.order.device
        cls = torch.randint(0, self.n_classes, (batch_size,), generator=generator, device=device)
        u = torch.rand(batch_size, generator=generator, device=device)
        within = torch.minimum((u * self.counts[cls]).long(), self.counts[cls] - 1)
        return self.order[self.starts[cls] + within]


class ReconstructionModel(PerturbationModel):
    """Training and persistence shared by :class:`AutoEncoder` and the conditional autoencoder.

    Both take the same hyper-parameters; the defaults are the CellOT paper's
    scRNA-seq settings (``PRESETS`` of each subclass hold its 4i settings), except
    that ``eval_every=None`` validates as often as :func:`default_eval_every` says:
    the paper's 2,500 iterations for its fixed budget, at most 500 with early stopping,
    from the paper's first validation at 2,500 on (:func:`first_validation`).
    """

    #: Ranges of the hyper-parameters (``lr_step`` 0: a constant learning rate; ``lr`` 0 freezes the weights).
    parameter_constraints = {
        "hidden_units": Interval(1), "latent_dim": Interval(1), "dropout": Interval(0, 1, closed="left"),
        "lr": Interval(0), "weight_decay": Interval(0), "lr_step": Interval(0), "batch_size": Interval(1),
        "n_iters": Interval(1), "eval_every": Interval(1), "checkpoint_every": Interval(1), "val_cells": Interval(0),
        "patience": Interval(1),
    }

    def __init__(
        self,
        hidden_units: Sequence[int] = (512, 512),
        latent_dim: int = 50,
        dropout: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        lr_step: int = 100_000,
        batch_size: int = 256,
        n_iters: int = 250_000,
        eval_every: int | None = None,
        checkpoint_every: int = 1_000,
        val_cells: int = 2_000,
        patience: int | None = None,
        seed: int = 0,
        device: str = "auto",
    ) -> None:
        self.hidden_units = tuple(hidden_units)
        self.latent_dim = latent_dim
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_step = lr_step
        self.batch_size = batch_size
        self.n_iters = n_iters
        self.eval_every = eval_every
        self.checkpoint_every = checkpoint_every
        self.val_cells = val_cells
        self.patience = patience
        self.seed = seed
        self.device = device

    def resolved_params(self) -> dict[str, Any]:
        """The hyper-parameters, with the cadence ``eval_every=None`` stands for (:func:`default_eval_every`)."""
        return {**self.get_params(), "eval_every": self._eval_every()}

    def _eval_every(self) -> int:
        if self.eval_every is not None:
            return int(self.eval_every)
        return default_eval_every(self.n_iters, self.patience)

    # ------------------------------------------------------------- training
    def _train(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        n_conditions: int,
        checkpoint: str | Path | None,
    ) -> None:
        """Fit ``net_`` to reconstruct ``x``; ``labels`` (0..K-1) balance batches and, if
        ``n_conditions`` > 0, are the one-hot condition."""
        self._validate_params()
        eval_every = self._eval_every()
        first_val = first_validation(self.eval_every)
        if self.n_iters < 1 or self.batch_size < 1 or eval_every < 1:
            raise ValueError("n_iters, batch_size and eval_every must be positive")
        self.device_ = device = resolve_device(self.device)
        self.n_features_in_ = x.shape[1]
        self.n_conditions_ = int(n_conditions)

        train_idx, val_idx = carve_validation(len(x), self.val_cells, self.seed)
        seed_everything(self.seed)
        net = self._build_net().to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = (
            torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.lr_step, gamma=0.5)
            if self.lr_step > 0
            else None
        )
        generator = make_generator(self.seed, device)
        net.set_generator(generator)

        xs = torch.from_numpy(x).to(device)
        ls = torch.from_numpy(labels.astype(np.int64)).to(device)
        train_x, train_l = xs[train_idx], ls[train_idx]
        val_x, val_l = xs[val_idx], ls[val_idx]
        sampler = BalancedSampler(train_l)

        ckpt = Checkpoint(checkpoint, self.checkpoint_every, model=self,
                          data={"x": x, "labels": labels, "n_conditions": np.asarray(n_conditions)})
        start, best_state, n_running = 0, None, 0
        running = torch.zeros((), device=device)  # summed on device: no sync per step
        progress = Progress(self.name, self.n_iters, patience=self.patience, score_name="val_loss")
        state = ckpt.load()
        if state is not None:
            net.load_state_dict(state["net"])
            optimizer.load_state_dict(state["optimizer"])
            optimizer_to(optimizer, device)
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            restore_generator(generator, state["generator"])
            start, best_state = state["iteration"], state["best_net"]
            running, n_running = state["running"].to(device), state["n_running"]
            progress.history.rows = state["history"]
            progress.load_state_dict(state["progress"])

        def snapshot(iteration: int) -> dict[str, Any]:
            return {
                "net": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "generator": generator_state(generator),
                "iteration": iteration,
                "best_net": best_state,
                "running": running,
                "n_running": n_running,
                "history": progress.history.rows,
                "progress": progress.state_dict(),
            }

        net.train()
        with progress:
            for it in progress.iterations(start, self.n_iters, on_stop=lambda last: ckpt.save(snapshot(last))):
                idx = sampler.sample(self.batch_size, generator)
                xb = train_x[idx]
                recon = net(xb, self._condition(train_l[idx]))
                loss = torch.mean((recon - xb) ** 2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                running += loss.detach()
                n_running += 1

                if (it >= first_val and (it - first_val) % eval_every == 0) or it == self.n_iters:
                    val_loss = self._validation_loss(net, val_x, val_l)
                    train_loss = float(running) / n_running
                    row = {"iteration": it, "loss": train_loss, "val_loss": val_loss, "lr": optimizer.param_groups[0]["lr"]}
                    improved = progress.record(it, [row], score=val_loss, losses={"loss": train_loss})
                    running, n_running = torch.zeros((), device=device), 0
                    if improved[0]:
                        best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
                    if progress.converged:
                        break
                if ckpt.due(it) and it < self.n_iters:
                    ckpt.save(snapshot(it))

        if best_state is not None:  # no validation cells: keep the final weights
            net.load_state_dict(best_state)
        net.set_generator(None)
        net.eval()
        self.net_ = net
        self.history_ = progress.history.to_frame()
        ckpt.clear()

    def _build_net(self) -> MLPAutoencoder:
        return MLPAutoencoder(
            self.n_features_in_,
            [int(h) for h in self.hidden_units],
            int(self.latent_dim),
            float(self.dropout),
            self.n_conditions_,
        )

    def _condition(self, labels: torch.Tensor) -> torch.Tensor | None:
        if self.n_conditions_ == 0:
            return None
        return torch.nn.functional.one_hot(labels, self.n_conditions_).to(torch.float32)

    @torch.no_grad()
    def _validation_loss(self, net: MLPAutoencoder, x: torch.Tensor, labels: torch.Tensor) -> float:
        """Per-feature MSE averaged within each class, then over classes (as training weighs them)."""
        if len(x) == 0:
            return float("nan")
        net.eval()
        per_cell = torch.mean((net(x, self._condition(labels)) - x) ** 2, dim=1)
        net.train()
        classes = torch.unique(labels)
        return float(torch.stack([per_cell[labels == c].mean() for c in classes]).mean())

    # ------------------------------------------------------------ inference
    @torch.no_grad()
    def _apply(
        self,
        fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
        arr: np.ndarray,
        label: int | None = None,
    ) -> np.ndarray:
        """Run ``fn(batch, condition)`` over ``arr`` in chunks, on the model's device."""
        out = []
        for start in range(0, len(arr), _CHUNK):
            chunk = torch.from_numpy(arr[start : start + _CHUNK]).to(self.device_)
            cond = None
            if label is not None:
                cond = self._condition(torch.full((len(chunk),), label, dtype=torch.long, device=self.device_))
            out.append(fn(chunk, cond).cpu())
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def _check_latent(self, z: Any) -> np.ndarray:
        self._check_fitted()
        z = as_float_array(z, "z")
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"latent codes must have {self.latent_dim} columns, got {z.shape[1]}")
        return z

    # ---------------------------------------------------------- persistence
    def _get_state(self) -> dict[str, Any]:
        return {**super()._get_state(), "n_conditions_": self.n_conditions_}

    def _get_tensors(self) -> dict[str, torch.Tensor]:
        return {f"net.{k}": v for k, v in self.net_.state_dict().items()}

    def _set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.device_ = resolve_device(self.device)
        net = self._build_net()
        net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items()})
        self.net_ = net.to(self.device_).eval()


class AutoEncoder(ReconstructionModel):
    """MLP autoencoder (per-feature MSE) that maps cells to a latent space and back.

    Defaults are the CellOT paper's scRNA-seq settings; ``FEATURES_PRESET`` holds
    its 4i settings. ``fit`` takes the cells of every condition; with ``labels``
    the minibatches are class-balanced. It is not a perturbation model:
    ``transport`` raises ``TypeError`` (wrap it with :class:`perturbot.latent.LatentModel`).
    """

    name = "autoencoder"

    #: Defaults by data modality (the papers' settings), applied by the workflow below user overrides.
    PRESETS: dict[str, dict[str, Any]] = {"features": FEATURES_PRESET}

    def fit(
        self,
        x: Any,
        *,
        labels: Sequence[Any] | np.ndarray | None = None,
        checkpoint: str | Path | None = None,
    ) -> "AutoEncoder":
        """Train on ``x`` (cells x features); ``labels`` (one per cell) balance the batches."""
        x = as_float_array(x, "x")
        if labels is None:
            codes = np.zeros(len(x), dtype=np.int64)
        else:
            labels = np.asarray(labels)
            if labels.shape != (len(x),):
                raise ValueError(f"labels must have one entry per cell ({len(x)}), got shape {labels.shape}")
            codes = np.unique(labels, return_inverse=True)[1].astype(np.int64)
        self._train(x, codes, n_conditions=0, checkpoint=checkpoint)
        return self

    def encode(self, x: Any) -> np.ndarray:
        """Latent codes (cells x ``latent_dim``)."""
        return self._apply(lambda b, _: self.net_.encode(b), self._check_input(x))

    def decode(self, z: Any) -> np.ndarray:
        """Cells in feature space from latent codes."""
        return self._apply(lambda b, _: self.net_.decode(b), self._check_latent(z))

    def reconstruct(self, x: Any) -> np.ndarray:
        """decode(encode(x)) in one pass."""
        return self._apply(lambda b, _: self.net_(b), self._check_input(x))

    def transport(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        raise TypeError(
            "AutoEncoder is not a perturbation model; wrap an inner model with "
            "perturbot.latent.LatentModel(inner, autoencoder) to predict in its latent space"
        )
