"""What an index run can take from the index it replaces: the folders it holds (:func:`library_paths`), its
descriptors and local features when the settings match (:func:`open_previous`), and its fitted encoder
(:func:`reusable_encoder`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hashdup.descriptors import Descriptor
from hashdup.descriptors.local import LocalExtractor
from hashdup.encoders import BaseEncoder, load_encoder
from hashdup.errors import HashdupError, IndexFileError, NoIndexError
from hashdup.extract import STORED_DTYPE
from hashdup.io.atomic import file_digest
from hashdup.io.catalogue import FileRecord
from hashdup.io.featurefile import VERSION as FEATURE_FORMAT
from hashdup.io.featurefile import FeatureFile
from hashdup.io.store import StoredIndex
from hashdup.supervision import Supervision


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value, sort_keys=True))


def descriptor_settings(desc: Descriptor, local: LocalExtractor) -> dict[str, Any]:
    """What decides the descriptors and local features: name, parameters, length and stored dtype, the local
    extractor's parameters and the format its features are stored in (as stored in the manifest)."""
    return _plain({"name": desc.name, "params": desc.get_params(), "n_features": desc.n_features,
                   "dtype": np.dtype(STORED_DTYPE).name, "local": local.get_params(),
                   "feature_format": FEATURE_FORMAT})


def supervision_settings(sup: Supervision) -> dict[str, Any]:
    """The supervision options, label and pair files named by absolute path and content hash."""
    out: dict[str, Any] = asdict(sup)
    for key in ("labels", "pairs"):
        if out[key]:
            out[key] = {"path": os.path.abspath(out[key]), "blake2b": file_digest(out[key])}
    return out


@dataclass
class Previous:
    """The last committed index as this run sees it.

    ``records`` (every catalogue record by absolute path) serve the added / updated / removed / unchanged counts
    whenever the previous catalogue is readable; ``descriptors`` and local ``features`` are set only when they can be
    reused (same descriptor and local-feature settings, every checksum right); otherwise ``reason`` says why not.
    """

    manifest: dict[str, Any] | None = None
    records: dict[str, FileRecord] = field(default_factory=dict)
    descriptors: NDArray[np.floating] | None = None
    features: FeatureFile | None = None
    reason: str = ""
    stored: StoredIndex | None = None

    @property
    def started_ns(self) -> int | None:
        value = (self.manifest or {}).get("started_ns")
        return value if isinstance(value, int) else None

    def close(self) -> None:
        if self.stored is not None:
            self.stored.close()


def open_previous(index_dir: str | os.PathLike[str], settings: dict[str, Any]) -> Previous:
    """Open the current generation of ``index_dir`` for reuse (see :class:`Previous`); never raises for a missing
    or damaged index, which only means that nothing is reused."""
    try:
        stored = StoredIndex(index_dir, verify=True)
    except NoIndexError:
        return Previous(reason="")
    except (IndexFileError, OSError) as e:
        return Previous(reason=f"the previous index is unreadable ({e})")
    prev = Previous(stored.manifest, stored=stored)
    try:
        prev.records = stored.catalogue.by_path()
        old = _plain({k: stored.manifest["descriptor"].get(k) for k in settings})
        if old["name"] != settings["name"]:
            prev.reason = f"the descriptor changed ({old['name']} → {settings['name']})"
        elif old.get("feature_format") != settings.get("feature_format") and old.get("local") is not None:
            prev.reason = (f"the local features are stored in format {old.get('feature_format') or 1}, this hashdup "
                           f"writes format {settings.get('feature_format')}")
        elif old.get("local") != settings.get("local") and ({**old, "local": None, "feature_format": None}
                                                             == {**settings, "local": None, "feature_format": None}):
            prev.reason = ("the index has no local features (written by an older hashdup)" if old.get("local") is None
                           else "the local-feature settings changed")
        elif old != settings:
            a, b = old.get("params") or {}, settings["params"]
            changed = [f"{k} {a.get(k)} → {b.get(k)}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
            prev.reason = f"the descriptor settings changed ({', '.join(changed) or 'stored format'})"
        else:
            prev.descriptors = stored.descriptors  # checks the checksum and shape
            prev.features = stored.features
    except (IndexFileError, OSError, ValueError) as e:
        prev.descriptors = prev.features = None
        prev.reason = f"the previous index is unreadable ({e})"
    return prev


def reusable_encoder(prev: Previous, enc: BaseEncoder, supervision: dict[str, Any], refit: bool
                     ) -> tuple[BaseEncoder | None, str]:
    """The previous index's fitted encoder when it was made with the requested settings, else None and the reason
    to fit one ("" for a first index)."""
    if prev.manifest is None or prev.descriptors is None or prev.stored is None:  # stored: set with the manifest
        return None, prev.reason
    if refit:
        return None, "--refit was given"
    m = prev.manifest["encoder"]
    params = _plain(enc.json_params())
    old_params = m.get("params", {})
    if m["name"] != enc.name:
        return None, f"the encoder changed ({m['name']} → {enc.name})"
    if m["n_bits"] != enc.n_bits:
        return None, f"the code length changed ({m['n_bits']} → {enc.n_bits} bits)"
    if old_params != params:
        keys = sorted(k for k in params.keys() | old_params.keys() if params.get(k) != old_params.get(k))
        if keys == ["random_state"]:
            return None, f"the seed changed ({old_params.get('random_state')} → {params['random_state']})"
        return None, f"the encoder parameters changed ({', '.join(keys)})"
    if enc.supervision != "none" and prev.manifest.get("supervision") != _plain(supervision):
        return None, "the supervision options or files changed"
    path = prev.stored.path("encoder")
    try:
        loaded = load_encoder(path)
    except IndexFileError as e:
        return None, f"the previous encoder file is unreadable ({e.problem})"
    if (loaded.fingerprint().hex() != m["fingerprint"] or loaded.name != enc.name
            or loaded.n_features_in_ != prev.descriptors.shape[1]):
        return None, "the previous encoder file does not match its index"
    return loaded, ""


def library_paths(index_dir: str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]], *,
                  replace: bool = False) -> tuple[list[str], list[str]]:
    """What a run indexes: ``(paths, new)``, the absolute folders and files to walk and those of them that the
    index did not hold before.

    An index is a library that grows: the paths given are added to those already indexed (a path inside one of
    them is already covered; one that contains some of them takes their place), and with no paths the ones already
    indexed are walked again. ``replace`` indexes exactly the paths given (files elsewhere leave the index). A path
    of the index that no longer exists (an unplugged drive) stops the run rather than dropping its files.

    Raises
    ------
    HashdupError
        No paths and no index yet, or a path of the index is missing.
    """
    from hashdup.io.store import read_manifest
    from hashdup.io.walk import normalise_roots

    try:
        manifest = read_manifest(index_dir)
        before = [os.fsdecode(p) for p in (manifest.get("paths") or manifest.get("roots") or [])]
    except (NoIndexError, IndexFileError, OSError, ValueError):
        before = []
    given = [os.path.abspath(os.fsdecode(p)) for p in paths]
    if not given and not before:
        raise HashdupError(f"no index at {index_dir} yet: give the folders to index (hashdup index DIR)")
    if replace or not before:
        chosen = normalise_roots(given or before)
    else:
        missing = [p for p in before if not os.path.lexists(p)]
        if missing:
            raise HashdupError(f"{missing[0]}, indexed before, is missing (an unplugged drive?): reconnect it, or "
                               f"remove it from the index with `hashdup forget {missing[0]}` (or index again "
                               "with --replace)")
        chosen = normalise_roots(before + given)
    return chosen, [p for p in chosen if p not in before]
