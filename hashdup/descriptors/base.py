"""What every descriptor provides, and helpers shared by them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

View = Callable[[NDArray[np.floating]], NDArray[np.float64]]
"""A part or a coarsening of a descriptor, as a function of full descriptors: ``(n, n_features)`` in, ``(n, m)``
float64 out (see :meth:`Descriptor.views`)."""


@runtime_checkable
class Descriptor(Protocol):
    """A pure, deterministic map from square RGB images to float32 feature vectors.

    Attributes
    ----------
    name : str
        Registry name (``"gist"``, ``"color"``, ``"gist+color"``).
    image_size : int
        Side of the square uint8 RGB images :meth:`describe` expects; the image reader resizes to it.
    n_features : int
        Length of each descriptor.
    """

    @property
    def name(self) -> str: ...
    @property
    def image_size(self) -> int: ...
    @property
    def n_features(self) -> int: ...

    def describe(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Describe a batch of images of shape (n, image_size, image_size, 3) as an (n, n_features) array."""
        ...

    def get_params(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this descriptor."""
        ...

    def mirror_permutation(self) -> NDArray[np.int64]:
        """Feature order of the descriptor of the left-right mirrored image: ``describe(mirror(I)) ≈
        describe(I)[perm]``, an int64 permutation of shape (n_features,), so that mirrored copies are matched without
        describing them again."""
        ...

    def views(self) -> dict[str, View]:
        """Named views (see :data:`View`) in which near-duplicate search also looks for each image's nearest
        neighbours, in a fixed order; an empty dict when the whole descriptor is the only view."""
        ...


def check_images(images: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    """Validate a batch of square RGB uint8 images; a single (size, size, 3) image becomes a batch of one."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must have shape (n, {size}, {size}, 3), got {images.shape}")
    return images


def to_gray(images: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Luma of RGB images with the ITU-R BT.601 weights (as MATLAB's ``rgb2gray``), float32 in 0..255.

    Computed element by element (not as a matrix product), so an image gives the same bits alone or in a batch.
    """
    rgb = images.astype(np.float32)
    return rgb[..., 0] * np.float32(0.2989) + rgb[..., 1] * np.float32(0.5870) + rgb[..., 2] * np.float32(0.1140)
