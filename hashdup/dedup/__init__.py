"""The dedup wing: from an opened index to groups of near-duplicates, and what is done with them.

- :mod:`~hashdup.dedup.candidates` proposes candidate pairs from the binary codes and the descriptors (stage 1);
- :mod:`~hashdup.dedup.judge` decides them: descriptor distance, then :mod:`~hashdup.dedup.verify` (local features
  stored at index time, a similarity transform, the aligned thumbnails), verdicts kept for the next run (stage 2);
- :mod:`~hashdup.dedup.groups` joins decided pairs into groups (star, single or complete linkage), with the keeper
  of :mod:`~hashdup.dedup.keepers`; :mod:`~hashdup.dedup.members` holds the records they share;
- :mod:`~hashdup.dedup.actions` moves, links or trashes duplicates, journalled in a manifest
  (:mod:`~hashdup.dedup.manifest`) that :mod:`~hashdup.dedup.undo` reverses; :mod:`~hashdup.dedup.report` writes the
  HTML report.

This package imports the index layers (:mod:`hashdup.opened`, :mod:`hashdup.index`, :mod:`hashdup.io`), never the
use cases (:mod:`hashdup.pipeline`) or the command line.
"""

from hashdup.dedup.groups import LINKAGES, Linkage, connected_groups, find_groups
from hashdup.dedup.keepers import KEEP_POLICIES, KeepPolicy, order_members, original_keeper
from hashdup.dedup.members import Group, Member

__all__ = ["KEEP_POLICIES", "LINKAGES", "Group", "KeepPolicy", "Linkage", "Member", "connected_groups",
           "find_groups", "order_members", "original_keeper"]
