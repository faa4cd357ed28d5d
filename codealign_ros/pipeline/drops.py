"""The one drop table: every reason a node counts, grouped by where it is counted.

README.md "Drop reasons" documents each reason once; test/test_drop_table.py checks that the
README table and `drop_table()` agree and that every reason literal counted in the nodes and
pipelines is listed here. Diagnostics show receiver drops as `drop_<reason>` (skips as
`skipped_<reason>`), vehicle drops as `drop_<reason>`, sync drops summed in `sync_dropped`.
"""
from __future__ import annotations

from codealign_ros.core.codemap import CodeMapError
from codealign_ros.pipeline.transport import TRANSPORT_REASONS as _TRANSPORT

__all__ = ["DROP_REASONS", "FUSION_NODE_REASONS", "SKIP_REASONS", "SYNC_REASONS",
           "TRANSPORT_REASONS", "VEHICLE_NODE_REASONS", "VEHICLE_PIPELINE_REASONS", "drop_reason",
           "drop_table"]

# Receiver pipeline (decode, validation, association): dropped maps / skipped peers
DROP_REASONS = ("malformed", "bad_size", "bad_length", "bomb", "bad_bits", "bad_grid",
                "nan_pose", "unknown_space", "hash_mismatch", "future", "stale",
                "duplicate_agent", "out_of_range", "too_many_peers", "unused")
SKIP_REASONS = ("stale", "out_of_range")  # peers held but not fused into an ego frame
_CODEMAP_REASONS = {"pose": "nan_pose", "bits": "bad_bits", "size": "bad_length",
                    "length": "bad_length", "bomb": "bomb", "shape": "bad_size",
                    "resolution": "bad_grid"}


def drop_reason(error: CodeMapError) -> str:
    """The receiver drop reason of a CodeMapError (decode or validation failure)."""
    return _CODEMAP_REASONS.get(error.reason, "malformed")


FUSION_NODE_REASONS = ("no_ego_yet", "ego_unusable", "internal_error")
# Transport accounting of fusion_node (pipeline.transport: superseded / busy / lost / echo)
TRANSPORT_REASONS = _TRANSPORT
VEHICLE_PIPELINE_REASONS = ("bad_points", "empty_cloud", "nan_points", "bad_cameras")
VEHICLE_NODE_REASONS = ("malformed_cloud", "malformed_camera", "nan_pose", "bad_codemap",
                        "internal_error", "busy")
SYNC_REASONS = ("late", "duplicate", "overflow", "unmatched", "headerless")


def drop_table() -> dict[str, tuple[str, ...]]:
    """Stage -> reasons, the stage names as in the README table's "counted by" column."""
    from codealign_ros.pipeline.link import link_reasons

    return {"receiver link": link_reasons(), "receiver decode": DROP_REASONS,
            "receiver node": FUSION_NODE_REASONS + TRANSPORT_REASONS,
            "receiver skip": SKIP_REASONS,
            "vehicle": VEHICLE_PIPELINE_REASONS + VEHICLE_NODE_REASONS,
            "vehicle sync": SYNC_REASONS}
