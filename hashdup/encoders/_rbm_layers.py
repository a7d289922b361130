"""Training pieces of the RBM encoder (:mod:`hashdup.encoders.rbm`): CD-1 pretraining of one RBM, the NCA objective
and its gradient, and back-propagation through the stack with Adam.

Everything here works in float32 for speed and takes its randomness from a :class:`numpy.random.Generator`; the
encoder converts the results to float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

F32 = NDArray[np.float32]


@dataclass
class Layer:
    """One layer of the stack: ``h = sigmoid(v @ W + c)``; ``b`` is the visible bias, used when unrolling."""

    W: F32
    b: F32
    c: F32


def batches(perm: NDArray[np.int64], batch_size: int) -> list[NDArray[np.int64]]:
    """Split shuffled row indices into ``ceil(n / batch_size)`` batches of near-equal size.

    A remainder batch of one or two rows makes a wild step (on 101 GIST descriptors in batches of 100, the one-row
    batch made the Gaussian RBM diverge).
    """
    return np.array_split(perm, max(1, -(-len(perm) // max(1, batch_size))))


def cd1(V: F32, n_hidden: int, rng: np.random.Generator, *, gaussian: bool, epochs: int, lr: float, batch_size: int,
        momentum: float, weight_decay: float, on_epoch: Callable[[], None]) -> tuple[Layer, NDArray[np.float64]]:
    """Train one RBM on the rows of ``V`` with one-step contrastive divergence.

    Parameters
    ----------
    V : ndarray of float32, shape (n, d)
        Visible data: standardised reals (``gaussian=True``, unit-variance Gaussian visibles) or values in [0, 1]
        (Bernoulli visibles, probabilities used as data).
    n_hidden : int
        Number of binary (Bernoulli) hidden units.
    epochs, lr, batch_size, momentum, weight_decay
        Plain CD-1 with mini-batches; the momentum is 0.5 for the first five epochs and ``momentum`` afterwards, and
        the L2 weight decay applies to the weights only (Hinton's practical guide, sections 9 and 10).
    on_epoch : callable
        Called after each epoch.

    Returns
    -------
    layer : Layer
    errors : ndarray of float64, shape (epochs,)
        Mean squared error per visible unit between each batch and its mean-field reconstruction from sampled
        hidden states, averaged over the epoch.
    """
    n, d = V.shape
    W = (0.01 * rng.standard_normal((d, n_hidden))).astype(np.float32)
    if gaussian:
        b = V.mean(axis=0).astype(np.float32)
    else:
        p = np.clip(V.mean(axis=0), 1e-3, 1 - 1e-3)
        b = np.log(p / (1 - p)).astype(np.float32)
    c = np.zeros(n_hidden, np.float32)
    dW, db, dc = np.zeros_like(W), np.zeros_like(b), np.zeros_like(c)
    errors = np.zeros(epochs)
    for epoch in range(epochs):
        mom = 0.5 if epoch < 5 else momentum
        total = 0.0
        for rows in batches(rng.permutation(n), batch_size):
            v0 = V[rows]
            m = len(v0)
            h0 = expit(v0 @ W + c)
            h_sample = (rng.random(h0.shape, dtype=np.float32) < h0).astype(np.float32)
            v1 = h_sample @ W.T + b
            if not gaussian:
                v1 = expit(v1)
            h1 = expit(v1 @ W + c)
            dW *= mom
            dW += (lr / m) * (v0.T @ h0 - v1.T @ h1) - (lr * weight_decay) * W
            db *= mom
            db += (lr / m) * (v0.sum(axis=0) - v1.sum(axis=0))
            dc *= mom
            dc += (lr / m) * (h0.sum(axis=0) - h1.sum(axis=0))
            W += dW
            b += db
            c += dc
            total += float(((v0 - v1) ** 2).sum())
        errors[epoch] = total / (n * d)
        on_epoch()
    return Layer(W, b, c), errors


def nca(Z: F32, y: NDArray[np.integer]) -> tuple[float, F32]:
    """Neighbourhood components analysis objective of the codes ``Z`` and its gradient.

    ``p_ab = exp(−‖z_a − z_b‖²) / Σ_{c≠a} exp(−‖z_a − z_c‖²)`` and ``O = (1/n) Σ_a Σ_{b≠a: y_b = y_a} p_ab``, the
    expected fraction of rows that a stochastic nearest neighbour classifies correctly (Goldberger et al. 2004).

    Returns
    -------
    objective : float
        ``O``, in [0, 1].
    grad : ndarray of float32, shape (n, k)
        ``∂O/∂Z``.
    """
    n = len(Z)
    sq = (Z * Z).sum(axis=1)
    D = np.maximum(sq[:, None] + sq[None, :] - 2 * (Z @ Z.T), 0.0)
    np.fill_diagonal(D, np.inf)
    logits = -D
    logits -= logits.max(axis=1, keepdims=True)
    P = np.exp(logits)
    P /= P.sum(axis=1, keepdims=True)
    same = y[:, None] == y[None, :]
    np.fill_diagonal(same, False)
    p_correct = (P * same).sum(axis=1)
    # ∂O/∂d_ab = p_ab (p_a − [y_a = y_b]) / n, and d_ab = ‖z_a − z_b‖² pulls z_a and z_b alike
    G = P * (p_correct[:, None] - same) / n
    S = G + G.T
    grad = 2.0 * (S.sum(axis=1)[:, None] * Z - S @ Z)
    return float(p_correct.mean()), grad.astype(np.float32)


class Adam:
    """Adam (Kingma & Ba 2015) over a list of float32 arrays, updated in place (descent on a loss)."""

    def __init__(self, params: list[F32], lr: float, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.beta1, self.beta2, self.eps = params, lr, beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[F32]) -> None:
        self.t += 1
        scale = self.lr * np.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            p -= (scale * m / (np.sqrt(v) + self.eps)).astype(np.float32)


def forward(V: F32, layers: list[Layer], *, noise: F32 | None = None, linear_top: bool = False) -> list[F32]:
    """Activations of every layer (input first): ``h = sigmoid(v @ W + c)``, with ``noise`` added to the top
    layer's input, and the top layer linear when ``linear_top`` (a decoder reconstructing Gaussian visibles)."""
    acts = [V]
    for i, layer in enumerate(layers):
        a = acts[-1] @ layer.W + layer.c
        top = i == len(layers) - 1
        if noise is not None and top:
            a += noise
        acts.append(a if linear_top and top else expit(a))
    return acts


def backward(acts: list[F32], layers: list[Layer], grad_top: F32, *, linear_top: bool = False
             ) -> tuple[list[F32], list[F32], F32]:
    """Back-propagate ``∂L/∂(top activations)`` through the layers that gave ``acts = forward(...)``.

    Returns the gradients of the weights and of the hidden biases ``c`` (in the order of ``layers``), and
    ``∂L/∂(input)``.
    """
    gW: list[F32] = [np.empty(0, np.float32)] * len(layers)
    gc: list[F32] = [np.empty(0, np.float32)] * len(layers)
    delta = grad_top
    for i in range(len(layers) - 1, -1, -1):
        h = acts[i + 1]
        if not (linear_top and i == len(layers) - 1):
            delta = delta * h * (1 - h)
        gW[i] = acts[i].T @ delta
        gc[i] = delta.sum(axis=0)
        delta = delta @ layers[i].W.T
    return gW, gc, delta


def unroll(layers: list[Layer]) -> list[Layer]:
    """The decoder of Hinton & Salakhutdinov (2006): the RBMs' transposed weights and visible biases, top layer
    first, as independent copies (fine-tuning unties them from the encoder)."""
    return [Layer(W=layer.W.T.copy(), b=layer.c.copy(), c=layer.b.copy()) for layer in reversed(layers)]
