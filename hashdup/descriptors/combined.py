"""GIST and colour together."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from hashdup.descriptors.base import View
from hashdup.descriptors.color import ColorHistogram, ColorSpace
from hashdup.descriptors.gist import Gist


class GistColor:
    """GIST concatenated with a colour histogram, each part L2-normalised and weighted.

    For an image with GIST ``g`` and histogram ``c`` the descriptor is
    ``[sqrt(1 - w) · g / ‖g‖, sqrt(w) · c / ‖c‖]`` with ``w = color_weight``: a unit vector whose squared Euclidean
    distances are ``(1 - w) · d_gist² + w · d_color²`` on the normalised parts, so ``w`` is the share of the colour
    part in the distance. Both parts are computed from the same square image of side ``image_size``.

    Parameters
    ----------
    image_size : int, default 128
        Passed to :class:`~hashdup.descriptors.gist.Gist`.
    color_weight : float, default 0.25
        Share ``w`` of the colour histogram, in [0, 1].
    space, bins, grid
        Passed to :class:`~hashdup.descriptors.color.ColorHistogram`.

    References
    ----------
    A. Oliva and A. Torralba, "Modeling the shape of the scene", IJCV 2001; M. J. Swain and D. H. Ballard,
    "Color indexing", IJCV 1991.
    """

    name = "gist+color"

    def __init__(self, *, image_size: int = 128, color_weight: float = 0.25, space: ColorSpace = "hsv",
                 bins: tuple[int, int, int] | None = None, grid: int = 1) -> None:
        if not 0.0 <= float(color_weight) <= 1.0:
            raise ValueError(f"color_weight must be in [0, 1], got {color_weight}")
        self.color_weight = float(color_weight)
        self.gist = Gist(image_size=image_size)
        self.color = ColorHistogram(space=space, bins=bins, grid=grid, image_size=image_size)
        self.image_size = self.gist.image_size

    @property
    def n_features(self) -> int:
        return self.gist.n_features + self.color.n_features

    def get_params(self) -> dict[str, Any]:
        c = self.color.get_params()
        return {"image_size": self.image_size, "color_weight": self.color_weight, "space": c["space"],
                "bins": c["bins"], "grid": c["grid"]}

    def views(self) -> dict[str, View]:
        """Parts of the descriptor that near-duplicate search also looks for neighbours in, as functions of full
        descriptors: the colour histogram, and the GIST on a 2 × 2 grid (a caption moves the GIST far and the colours
        little; a grey copy the reverse; a crop moves the fine grid more than the coarse one)."""
        g, w = self.gist.n_features, np.sqrt(1.0 - self.color_weight)
        return {"color": lambda X: np.asarray(X, dtype=np.float64)[:, g : g + self.color.n_features],
                "gist-2x2": lambda X: self.gist.coarse(np.asarray(X)[:, :g] / max(w, 1e-12), 2)}

    def mirror_permutation(self) -> NDArray[np.int64]:
        """Feature order of the mirrored image's descriptor: each part's permutation, the colour part offset."""
        return np.concatenate([self.gist.mirror_permutation(), self.gist.n_features + self.color.mirror_permutation()])

    def describe(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Describe (n, image_size, image_size, 3) uint8 images as (n, n_features) float32 unit vectors."""
        parts = []
        for desc, w in ((self.gist, 1.0 - self.color_weight), (self.color, self.color_weight)):
            X = desc.describe(images).astype(np.float64)
            norms = np.linalg.norm(X, axis=1, keepdims=True)
            parts.append(np.sqrt(w) * X / np.where(norms > 0, norms, 1.0))
        return np.hstack(parts).astype(np.float32)
