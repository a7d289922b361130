"""Semantic hashing with a stack of restricted Boltzmann machines (Salakhutdinov & Hinton; Torralba, Fergus & Weiss)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

from hashdup.encoders import _rbm_layers as L
from hashdup.encoders.base import BaseEncoder, Pairs, RandomState, StepProgress, project


def _epochs(n_rows: int, batch: int, epochs: int, min_steps: int) -> int:
    """Epochs giving at least ``min_steps`` mini-batch updates (``epochs`` when that is already enough)."""
    per_epoch = max(1, -(-n_rows // batch))
    return max(epochs, -(-min_steps // per_epoch)) if epochs > 0 else 0


#: Floor of the per-feature standard deviation, as a fraction of the root-mean-square one: a pixel that is almost
#: always 0 must not become a huge standardised value when it is not.
STD_FLOOR = 0.1


class RBMHash(BaseEncoder):
    """Binary codes from the top layer of a deep belief network, fine-tuned with NCA or as an autoencoder.

    The network maps standardised descriptors through layers of logistic units, ``d → hidden[0] → … → n_bits``,
    and bit ``b`` is 1 when the ``b``-th top-layer activation is at least 0.5. Training has two stages:

    1. **Greedy pretraining**: each pair of adjacent layers is a restricted Boltzmann machine, trained with one-step
       contrastive divergence (CD-1) with mini-batches, momentum and weight decay, on the hidden probabilities of the
       RBM below. The first RBM has unit-variance Gaussian visible units for the real-valued descriptors, which are
       standardised per feature with the training mean and standard deviation (floored at ``STD_FLOOR`` times the
       root-mean-square standard deviation); the others are Bernoulli–Bernoulli.
    2. **Fine-tuning** by back-propagation through the whole stack, with Adam on mini-batches:

       * with labels ``y``: maximise the neighbourhood components analysis objective of the codes
         ``z`` (top-layer activations), ``O = Σ_a Σ_{b: y_b = y_a} p_ab`` with
         ``p_ab = exp(−‖z_a − z_b‖²) / Σ_{c≠a} exp(−‖z_a − z_c‖²)``, computed within each batch. Batches are
         stratified (each class spread evenly over them), so every class of a few hundred rows or more is in each.
       * with ``pairs`` only: the same, the classes being the connected components of the graph of similar pairs
         (a row in no similar pair is a class of its own). Dissimilar pairs are not used: NCA already pushes
         apart every two rows of different components.
       * without supervision: the unrolled deep autoencoder of Hinton & Salakhutdinov (2006), the decoder initialised
         with the transposed RBM weights and untied from the encoder, minimising the squared reconstruction error of
         the standardised input (linear output units).

       In both cases Gaussian noise of standard deviation ``code_noise`` is added to the input of the code layer
       during fine-tuning, as in semantic hashing: to carry information through the noise, the network learns
       large code-layer inputs, so that the activations saturate near 0 or 1 and thresholding loses little.

    Parameters
    ----------
    n_bits : int, default 64
        Code length, the size of the top layer.
    random_state : int, numpy Generator or None, default None
        Seeds initial weights, CD sampling, batch order and noise; the same seed gives byte-identical codes.
    hidden : sequence of int, default (512, 256)
        Sizes of the hidden layers between the input and the code layer.
    pretrain_epochs : int, default 10
        CD-1 epochs per RBM.
    pretrain_lr : float, default 0.05
        CD-1 learning rate of the Bernoulli–Bernoulli RBMs.
    gaussian_lr : float, default 0.005
        CD-1 learning rate of the bottom (Gaussian–Bernoulli) RBM; Hinton's guide advises one or two orders of
        magnitude below the binary one.
    pretrain_batch : int, default 100
    momentum : float, default 0.9
        CD-1 momentum after the first five epochs (0.5 before).
    weight_decay : float, default 2e-4
        L2 penalty on the RBM weights during pretraining.
    finetune_epochs : int, default 50
    finetune_lr : float, default 3e-3
        Adam step size.
    finetune_batch : int, default 1000
        Rows per fine-tuning batch; NCA compares every pair of rows within a batch.
    min_steps : int, default 400
        Least number of mini-batch updates per RBM and for fine-tuning: on a small training set (a few hundred rows)
        the epochs are raised to reach it, so that the network is trained, not left near its initial state. The
        defaults on 9,000 rows already make 900 and 450 updates.
    code_noise : float, default 8.0
        Standard deviation of the noise added to the code layer's input during fine-tuning (0 for none).

    Attributes
    ----------
    mean_, std_ : ndarray of float64, shape (n_features,)
        Standardisation of the input.
    layer_sizes_ : ndarray of int64, shape (n_layers + 1,)
        ``(n_features, *hidden, n_bits)``.
    weights_ : ndarray of float64, shape (Σ layer_sizes_[i] · layer_sizes_[i + 1],)
        The layers' weight matrices, flattened (C order) and concatenated; :attr:`coefs` gives them as matrices.
    biases_ : ndarray of float64, shape (Σ layer_sizes_[1:],)
        The layers' hidden biases, concatenated.
    pretrain_error_ : ndarray of float64, shape (n_layers, pretrain_epochs)
        Mean squared CD-1 reconstruction error per visible unit, for each RBM and epoch.
    finetune_objective_ : ndarray of float64, shape (finetune_epochs,)
        Per epoch, averaged over batches: the NCA objective divided by the batch size (the expected fraction of
        rows a stochastic nearest neighbour labels right, which rises) when fine-tuned with labels or pairs, and
        the mean squared reconstruction error per input feature (which falls) when fine-tuned as an autoencoder.
    n_features_in_ : int

    Notes
    -----
    The defaults suit thousands of rows or more (the protocol of :mod:`hashdup.evaluation` on MNIST: 9,000 training
    rows of 784 pixels; mAP 0.94 at 16 and 32 bits, 0.93 at 64). With a few hundred rows they make too few steps:
    use smaller ``pretrain_batch``, larger learning rates, and ``code_noise`` 0 or small. ``progress`` counts
    ``n_layers · pretrain_epochs + finetune_epochs`` epochs.

    References
    ----------
    R. Salakhutdinov and G. Hinton, "Semantic hashing", SIGIR workshop on information retrieval and applications of
    graphical models, 2007; International Journal of Approximate Reasoning 50(7), 2009.
    G. E. Hinton and R. R. Salakhutdinov, "Reducing the dimensionality of data with neural networks", Science 313,
    2006.
    A. Torralba, R. Fergus and Y. Weiss, "Small codes and large image databases for recognition", CVPR 2008.
    J. Goldberger, S. Roweis, G. Hinton and R. Salakhutdinov, "Neighbourhood components analysis", NIPS 2004.
    G. E. Hinton, "A practical guide to training restricted Boltzmann machines", UTML TR 2010-003, 2010.
    D. P. Kingma and J. Ba, "Adam: a method for stochastic optimization", ICLR 2015.
    """

    name = "rbm"
    supervision = "optional"
    _fitted = ("mean_", "std_", "layer_sizes_", "weights_", "biases_", "pretrain_error_", "finetune_objective_")

    def __init__(self, *, n_bits: int = 64, random_state: RandomState = None, hidden: tuple[int, ...] = (512, 256),
                 pretrain_epochs: int = 10, pretrain_lr: float = 0.05, gaussian_lr: float = 0.005,
                 pretrain_batch: int = 100, momentum: float = 0.9, weight_decay: float = 2e-4,
                 finetune_epochs: int = 50, finetune_lr: float = 3e-3, finetune_batch: int = 1000,
                 code_noise: float = 8.0, min_steps: int = 400) -> None:
        self.n_bits = n_bits
        self.random_state = random_state
        self.hidden = hidden
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_lr = pretrain_lr
        self.gaussian_lr = gaussian_lr
        self.pretrain_batch = pretrain_batch
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.finetune_epochs = finetune_epochs
        self.finetune_lr = finetune_lr
        self.finetune_batch = finetune_batch
        self.code_noise = code_noise
        self.min_steps = min_steps

    # --- fitted layers -------------------------------------------------------------------------------------------
    @property
    def coefs(self) -> list[tuple[NDArray[np.float64], NDArray[np.float64]]]:
        """``(W, c)`` of each layer, input first: ``W`` of shape (n_in, n_out), ``c`` of shape (n_out,)."""
        sizes = [int(s) for s in self.layer_sizes_]
        out, w0, b0 = [], 0, 0
        for n_in, n_out in itertools.pairwise(sizes):
            out.append((self.weights_[w0 : w0 + n_in * n_out].reshape(n_in, n_out), self.biases_[b0 : b0 + n_out]))
            w0, b0 = w0 + n_in * n_out, b0 + n_out
        return out

    def _check_params(self) -> list[int]:
        hidden = [int(h) for h in self.hidden]
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden must hold positive layer sizes, got {self.hidden!r}")
        for key in ("pretrain_batch", "finetune_batch"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)!r}")
        for key in ("pretrain_epochs", "finetune_epochs", "code_noise", "weight_decay"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be ≥ 0, got {getattr(self, key)!r}")
        for key in ("pretrain_lr", "gaussian_lr", "finetune_lr"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        return hidden

    # --- training ------------------------------------------------------------------------------------------------
    def _fit(self, X: NDArray[np.float64], rng: np.random.Generator, *, y: NDArray[np.integer] | None,
             pairs: Pairs | None, progress: StepProgress) -> None:
        sizes = [X.shape[1], *self._check_params(), int(self.n_bits)]
        n_layers = len(sizes) - 1
        classes = y if y is not None else _pair_components(pairs, len(X))
        if classes is not None and len(X) < 2:
            raise ValueError(f"{self.name} needs at least 2 samples to fine-tune with supervision, got {len(X)}")
        pre_epochs = _epochs(len(X), int(self.pretrain_batch), int(self.pretrain_epochs), int(self.min_steps))
        fine_epochs = _epochs(len(X), int(self.finetune_batch), int(self.finetune_epochs), int(self.min_steps))
        total = n_layers * pre_epochs + fine_epochs
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            progress(done, total)

        mean = X.mean(axis=0)
        std = X.std(axis=0)
        std = np.maximum(std, STD_FLOOR * np.sqrt(np.mean(std**2)))
        std[std == 0] = 1.0
        V = ((X - mean) / std).astype(np.float32)

        layers: list[L.Layer] = []
        errors = np.zeros((n_layers, pre_epochs))
        H = V
        for i in range(n_layers):
            layer, errors[i] = L.cd1(
                H, sizes[i + 1], rng, gaussian=i == 0, epochs=pre_epochs,
                lr=float(self.gaussian_lr if i == 0 else self.pretrain_lr), batch_size=int(self.pretrain_batch),
                momentum=float(self.momentum), weight_decay=float(self.weight_decay), on_epoch=tick)
            layers.append(layer)
            H = expit(H @ layer.W + layer.c)
        del H

        if classes is not None:
            curve = self._finetune_nca(V, np.asarray(classes), layers, rng, tick, fine_epochs)
        else:
            curve = self._finetune_autoencoder(V, layers, rng, tick, fine_epochs)

        self.mean_, self.std_ = mean, std
        self.layer_sizes_ = np.asarray(sizes, dtype=np.int64)
        self.weights_ = np.concatenate([layer.W.astype(np.float64).ravel() for layer in layers])
        self.biases_ = np.concatenate([layer.c.astype(np.float64) for layer in layers])
        self.pretrain_error_ = errors
        self.finetune_objective_ = curve

    def _noise(self, rng: np.random.Generator, m: int) -> NDArray[np.float32] | None:
        if self.code_noise == 0:
            return None
        return (float(self.code_noise) * rng.standard_normal((m, int(self.n_bits)), dtype=np.float32))

    def _finetune_nca(self, V: NDArray[np.float32], classes: NDArray[np.integer], layers: list[L.Layer],
                      rng: np.random.Generator, tick: Callable[[], None], epochs: int) -> NDArray[np.float64]:
        params = [p for layer in layers for p in (layer.W, layer.c)]
        opt = L.Adam(params, float(self.finetune_lr))
        n_batches = max(1, -(-len(V) // int(self.finetune_batch)))
        curve = np.zeros(epochs)
        for epoch in range(epochs):
            # stratified batches: shuffle, group by class (stable), deal the rows out to the batches in turn
            perm = rng.permutation(len(V))
            perm = perm[np.argsort(classes[perm], kind="stable")]
            objective = 0.0
            for k in range(n_batches):
                rows = np.sort(perm[k::n_batches])
                acts = L.forward(V[rows], layers, noise=self._noise(rng, len(rows)))
                value, grad = L.nca(acts[-1], classes[rows])
                gW, gc, _ = L.backward(acts, layers, -grad)
                opt.step([g for pair in zip(gW, gc, strict=True) for g in pair])
                objective += value
            curve[epoch] = objective / n_batches
            tick()
        return curve

    def _finetune_autoencoder(self, V: NDArray[np.float32], layers: list[L.Layer], rng: np.random.Generator,
                              tick: Callable[[], None], epochs: int) -> NDArray[np.float64]:
        decoder = L.unroll(layers)
        params = [p for layer in layers + decoder for p in (layer.W, layer.c)]
        opt = L.Adam(params, float(self.finetune_lr))
        curve = np.zeros(epochs)
        for epoch in range(epochs):
            total = 0.0
            for rows in L.batches(rng.permutation(len(V)), int(self.finetune_batch)):
                v = V[rows]
                acts = L.forward(v, layers, noise=self._noise(rng, len(v)))
                dacts = L.forward(acts[-1], decoder, linear_top=True)
                diff = dacts[-1] - v
                total += float((diff**2).sum())
                dW, dc, grad_code = L.backward(dacts, decoder, diff / np.float32(len(v)), linear_top=True)
                eW, ec, _ = L.backward(acts, layers, grad_code)
                opt.step([g for pair in zip(eW + dW, ec + dc, strict=True) for g in pair])
            curve[epoch] = total / V.size
            tick()
        return curve

    @classmethod
    def _from_saved(cls, meta: dict[str, Any], arrays: dict[str, NDArray[Any]]) -> Self:
        """As the base class, but ``hidden``, saved as a JSON list, comes back as a tuple like its default."""
        params = meta["params"]
        if isinstance(params.get("hidden"), list):
            meta = meta | {"params": params | {"hidden": tuple(params["hidden"])}}
        return super()._from_saved(meta, arrays)

    # --- encoding ------------------------------------------------------------------------------------------------
    def _bits(self, X: NDArray[np.float64]) -> NDArray[np.bool_]:
        H = (X - self.mean_) / self.std_
        coefs = self.coefs
        for W, c in coefs[:-1]:
            H = expit(project(H, W) + c)
        W, c = coefs[-1]
        return project(H, W) + c >= 0  # sigmoid(a) ≥ 0.5 exactly when a ≥ 0


def _pair_components(pairs: Pairs | None, n: int) -> NDArray[np.int64] | None:
    """Connected components of the similar pairs as class labels, or None when there is no similar pair."""
    if pairs is None or not pairs.similar.any():
        return None
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    i, j = pairs.i[pairs.similar], pairs.j[pairs.similar]
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)
