"""The estimator contract shared by every encoder, and its file format."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hashdup import bits
from hashdup.errors import IndexFileError, NotFittedError
from hashdup.io.atomic import atomic_write_bytes

RandomState = int | np.random.Generator | None
FORMAT_VERSION = 1
#: Rows per matrix product in :func:`project`.
PROJECTION_ROWS = 64


def project(X: NDArray[np.float64], W: NDArray[np.float64]) -> NDArray[np.float64]:
    """``X @ W`` computed in zero-padded blocks of exactly :data:`PROJECTION_ROWS` rows.

    BLAS picks different kernels, with different rounding, for different matrix shapes, so a plain ``X @ W`` can give
    a row a different last bit when it is encoded alone (a query) than inside a batch (indexing), and a bit whose
    projection lies near its threshold would flip. With one fixed shape, each row's result depends on that row only.
    """
    n = X.shape[0]
    out = np.empty((n, W.shape[1]), dtype=np.float64)
    block = np.zeros((PROJECTION_ROWS, X.shape[1]), dtype=np.float64)
    for start in range(0, n, PROJECTION_ROWS):
        m = min(PROJECTION_ROWS, n - start)
        block[:m] = X[start : start + m]
        block[m:] = 0.0
        out[start : start + m] = (block @ W)[:m]
    return out


def check_random_state(random_state: RandomState) -> np.random.Generator:
    """A :class:`numpy.random.Generator` from an int seed, a Generator (used as is) or None (fresh entropy)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool)):
        return np.random.default_rng(random_state)
    raise TypeError(f"random_state must be an int, a numpy Generator or None, got {random_state!r}")


@runtime_checkable
class Encoder(Protocol):
    """A fitted encoder, as code that only encodes sees it: float feature vectors in, packed binary codes out (see
    :mod:`hashdup.bits`).

    Every encoder of the registry is a :class:`BaseEncoder`, which is what building, fitting, saving and loading
    need; functions that only turn descriptors into codes ask for this Protocol instead.

    Attributes
    ----------
    name : str
        Registry name (``"lsh"``, ``"itq"``, ...).
    n_bits : int
        Bits per code.
    n_features_in_ : int
        Features per row :meth:`encode` accepts (set by fitting).
    """

    @property
    def name(self) -> str: ...
    @property
    def n_bits(self) -> int: ...
    @property
    def n_features_in_(self) -> int: ...

    def encode(self, X: ArrayLike) -> NDArray[np.uint8]:
        """Packed codes, uint8 of shape (n_samples, row_bytes(n_bits)), of float X of shape (n_samples,
        n_features_in_); raises :class:`~hashdup.errors.NotFittedError` when not fitted."""
        ...

    def fingerprint(self) -> bytes:
        """16-byte digest of everything that decides the codes (equal fingerprints, equal codes)."""
        ...


StepProgress = Callable[[int, int], None]
"""``progress(done, total)``: steps of one long computation done so far (epochs, sweeps, iterations) out of
``total``. Not :data:`hashdup.indexing.collect.Progress`, which also names the stage: ``progress(stage, done,
total)``."""


@dataclass(frozen=True)
class Pairs:
    """Pair constraints over the rows of a training matrix X.

    Attributes
    ----------
    i, j : ndarray of int64, shape (n_pairs,)
        Row indices into X.
    similar : ndarray of bool, shape (n_pairs,)
        True for a similar pair (should be close), False for a dissimilar one (should be far).
    """

    i: NDArray[np.int64]
    j: NDArray[np.int64]
    similar: NDArray[np.bool_]

    def __post_init__(self) -> None:
        i, j, s = (np.asarray(self.i, dtype=np.int64), np.asarray(self.j, dtype=np.int64),
                   np.asarray(self.similar, dtype=bool))
        if not (i.ndim == j.ndim == s.ndim == 1 and len(i) == len(j) == len(s)):
            raise ValueError(f"pairs need three 1-D arrays of one length, got {i.shape}, {j.shape}, {s.shape}")
        object.__setattr__(self, "i", i)
        object.__setattr__(self, "j", j)
        object.__setattr__(self, "similar", s)

    def __len__(self) -> int:
        return len(self.i)

    def check(self, n: int) -> None:
        """Raise ValueError when an index falls outside 0..n-1."""
        if len(self) and (min(self.i.min(), self.j.min()) < 0 or max(self.i.max(), self.j.max()) >= n):
            raise ValueError(f"pair indices must lie in 0..{n - 1}")


class BaseEncoder:
    """Base class of hashdup's encoders, after scikit-learn's estimator contract.

    Subclasses take keyword-only parameters stored verbatim in ``__init__``, list their fitted array attributes in
    ``_fitted``, implement ``_fit(X, rng, y=..., pairs=..., progress=...)`` (set those attributes) and
    ``_bits(X) -> bool (n, n_bits)``. ``supervision`` says whether the encoder ignores (``"none"``), can use
    (``"optional"``) or needs (``"required"``) labels or pair constraints. The base class validates input, sets
    ``n_features_in_``, packs bits, fingerprints the fitted state, and saves and loads it as ``.npz`` with a JSON
    header (never pickle).
    """

    name: ClassVar[str]
    _fitted: ClassVar[tuple[str, ...]]
    supervision: ClassVar[Literal["none", "optional", "required"]] = "none"
    #: Whether the code cannot be longer than the input: each bit is one of ``n_features`` directions.
    bits_within_features: ClassVar[bool] = False

    def check_n_features(self, n_features: int) -> None:
        """Raise ``ValueError`` now if this encoder cannot make ``n_bits`` bits from ``n_features`` features (what
        :meth:`fit` would find only after every image was described)."""
        if self.bits_within_features and self.n_bits > n_features:
            raise ValueError(f"{self.name} needs n_bits ≤ n_features, got n_bits={self.n_bits} for {n_features} "
                             "features")
    n_bits: int

    # --- parameters ----------------------------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY]

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as given."""
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # --- fit / encode --------------------------------------------------------------------------------------------
    def _validate(self, X: ArrayLike, *, fitting: bool) -> NDArray[np.float64]:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array (n_samples, n_features), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinite values")
        if fitting:
            if X.shape[0] < 1:
                raise ValueError(f"{self.name} needs at least 1 sample to fit, got 0")
            bits.check_n_bits(self.n_bits)
        else:
            if not hasattr(self, "n_features_in_"):
                raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")
            if X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with {self.n_features_in_}"
                )
        return X

    def fit(self, X: ArrayLike, y: ArrayLike | None = None, *, pairs: Pairs | None = None,
            progress: StepProgress | None = None) -> Self:
        """Learn the encoder from training descriptors.

        Parameters
        ----------
        X : array_like of float, shape (n_samples, n_features)
        y : array_like of int, shape (n_samples,), optional
            Class labels, for encoders that learn from supervision (ignored by the others).
        pairs : Pairs, optional
            Similar / dissimilar pair constraints over the rows of X, likewise.
        progress : callable, optional
            ``progress(done, total)`` for long trainings.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For malformed input, or when an encoder that needs labels or pairs gets neither.
        """
        X = self._validate(X, fitting=True)
        if y is not None:
            y = np.asarray(y)
            if y.shape != (X.shape[0],) or not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"y must be {X.shape[0]} integer labels, got shape {y.shape} and dtype {y.dtype}")
        if pairs is not None:
            pairs.check(X.shape[0])
        if self.supervision == "required" and y is None and (pairs is None or len(pairs) == 0):
            raise ValueError(f"the {self.name} encoder learns from supervision: give labels (y) or similar / "
                             "dissimilar pairs")
        self._fit(X, check_random_state(getattr(self, "random_state", None)), y=y, pairs=pairs,
                  progress=progress or (lambda done, total: None))
        self.n_features_in_ = X.shape[1]
        return self

    def encode(self, X: ArrayLike) -> NDArray[np.uint8]:
        """Binary codes of descriptors.

        Parameters
        ----------
        X : array_like of float, shape (n_samples, n_features_in_)

        Returns
        -------
        codes : ndarray of uint8, shape (n_samples, row_bytes(n_bits))
            Packed codes in the :mod:`hashdup.bits` layout.
        """
        X = self._validate(X, fitting=False)
        return bits.pack(self._bits(X))

    def _fit(self, X: NDArray[np.float64], rng: np.random.Generator, *, y: NDArray[np.integer] | None,
             pairs: Pairs | None, progress: StepProgress) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _bits(self, X: NDArray[np.float64]) -> NDArray[np.bool_]:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- persistence ---------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, NDArray[Any]]:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")
        return {name: np.ascontiguousarray(getattr(self, name)) for name in self._fitted}

    def json_params(self) -> dict[str, Any]:
        """Parameters as JSON values: numpy scalars become Python numbers, tuples lists; a Generator ``random_state``
        (which cannot be written down) becomes None, as the fitted arrays already hold what it drew."""
        def plain(key: str, v: Any) -> Any:
            if isinstance(v, np.generic):
                return v.item()
            if isinstance(v, (tuple, list)):
                return [plain(key, x) for x in v]
            if isinstance(v, np.random.Generator) and key == "random_state":
                return None
            if v is None or isinstance(v, (bool, int, float, str)):
                return v
            raise TypeError(f"parameter {key}={v!r} of {type(self).__name__} cannot be saved as JSON")
        return {k: plain(k, v) for k, v in self.get_params().items()}

    def _meta(self) -> dict[str, Any]:
        return {"format": "hashdup-encoder", "version": FORMAT_VERSION, "name": self.name,
                "params": self.json_params(), "n_features_in": int(self.n_features_in_)}

    def fingerprint(self) -> bytes:
        """16-byte blake2b digest of everything that decides the codes: name, parameters (but the seed), feature
        count and fitted arrays.

        Two encoders with the same fingerprint give the same codes; the code file stores it to catch mismatches.
        """
        h = hashlib.blake2b(digest_size=16)
        params = {k: v for k, v in self.json_params().items() if k != "random_state"}
        h.update(json.dumps([self.name, params, int(self.n_features_in_ if hasattr(self, "n_features_in_") else -1)],
                            sort_keys=True).encode())
        for key, arr in sorted(self._state().items()):
            h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
            h.update(arr.tobytes())
        return h.digest()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted encoder to ``path`` (``.npz``: its arrays plus a JSON header), atomically."""
        arrays = self._state()
        meta = self._meta() | {"fingerprint": self.fingerprint().hex()}
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False,  # numeric arrays only: never pickle
                 __meta__=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8), **arrays)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def _from_saved(cls, meta: dict[str, Any], arrays: dict[str, NDArray[Any]]) -> Self:
        obj = cls(**{k: v for k, v in meta["params"].items() if k in cls._param_names()})
        for name in cls._fitted:
            setattr(obj, name, arrays[name])
        obj.n_features_in_ = int(meta["n_features_in"])
        return obj


def read_saved(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """Read an encoder file's JSON header and arrays without unpickling anything."""
    spath = os.fsdecode(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError as e:
        raise IndexFileError(spath, "encoder file is missing") from e
    except Exception as e:
        raise IndexFileError(spath, f"cannot read encoder file: {e}") from e
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes())
    except (KeyError, ValueError) as e:
        raise IndexFileError(spath, "encoder file has no valid JSON header") from e
    if meta.get("format") != "hashdup-encoder" or meta.get("version") != FORMAT_VERSION:
        raise IndexFileError(spath, f"not a hashdup encoder file of version {FORMAT_VERSION}")
    return meta, arrays
