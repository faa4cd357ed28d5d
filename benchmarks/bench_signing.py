"""Cost of signed code maps: sign / verify time per map and bytes added on the wire.

Per grid (mini 64 x 64 and paper-scale 256 x 256, 4 bits, zstd and raw) it times what a
vehicle adds per map (canonical encoding + ECDSA P-256 signature) and what a receiver adds
(canonical encoding + verification, as `LinkChecker.check` does), median and p95 over
--repeat runs, and measures the CDR-serialized message size signed vs unsigned.
Writes benchmarks/results/signing.json and signing.md.

    python benchmarks/bench_signing.py [--repeat 300] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rclpy.serialization import serialize_message

from codealign_ros.core.codemap import CodeMap, Encoding, GridPose
from codealign_ros.core.codemap_samples import realistic_code_map
from codealign_ros.core.signing import Signer, generate_keys
from codealign_ros.pipeline.link import LinkChecker
from codealign_ros.ros.codemap_msg import codemap_to_msg
from codealign_ros.ros.signing_msg import sign_msg, wire_fields

GRIDS = {"mini 64x64": (64, 0.8), "opv2v 256x256": (256, 0.4)}


def _ms(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"median_ms": round(statistics.median(s) * 1e3, 4),
            "p95_ms": round(s[int(0.95 * (len(s) - 1))] * 1e3, 4)}


def bench(repeat: int) -> list[dict]:
    """One row per grid and encoding."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        generate_keys("cav_2", tmp)
        signer = Signer.from_file("cav_2", Path(tmp) / "cav_2.key")
        checker = LinkChecker("cav_1", True, tmp)
        for name, (cells, res) in GRIDS.items():
            cm = CodeMap(indices=realistic_code_map(cells, cells, 4, seed=1), bits=4,
                         agent_id="cav_2", modality="m1", code_space="g1",
                         codebook_hash="0123456789abcdef", stamp_ns=1_700_000_000_000_000_000,
                         frame_id="cav_2/lidar", resolution=res,
                         origin=(-cells * res / 2, -cells * res / 2, 0.0),
                         pose=GridPose((1.0, 2.0, 0.0)))
            for encoding in (Encoding.ZSTD, Encoding.RAW):
                msg = codemap_to_msg(cm, encoding)
                unsigned = len(serialize_message(msg))
                sign_t, verify_t = [], []
                for i in range(repeat):
                    msg.header.stamp.nanosec = i + 1  # a fresh map each time
                    t0 = time.perf_counter()
                    sign_msg(msg, signer)
                    t1 = time.perf_counter()
                    reason, _ = checker.check(wire_fields(msg), bytes(msg.signature), False)
                    t2 = time.perf_counter()
                    assert reason is None, reason
                    sign_t.append(t1 - t0)
                    verify_t.append(t2 - t1)
                signed = len(serialize_message(msg))
                rows.append({"grid": name, "encoding": encoding.name.lower(),
                             "data_bytes": len(msg.data), "cdr_unsigned": unsigned,
                             "cdr_signed": signed, "bytes_added": signed - unsigned,
                             "sign": _ms(sign_t), "verify": _ms(verify_t)})
    return rows


def markdown(rows: list[dict], repeat: int) -> str:
    lines = [f"ECDSA P-256 / SHA-256 (`cryptography`, OpenSSL), one thread, {repeat} maps; "
             "times include the canonical encoding and the message field copy.", "",
             "| grid | encoding | data B | message B unsigned | signed | added | "
             "sign ms median (p95) | verify ms median (p95) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['grid']} | {r['encoding']} | {r['data_bytes']} | "
                     f"{r['cdr_unsigned']} | {r['cdr_signed']} | {r['bytes_added']} | "
                     f"{r['sign']['median_ms']:.3f} ({r['sign']['p95_ms']:.3f}) | "
                     f"{r['verify']['median_ms']:.3f} ({r['verify']['p95_ms']:.3f}) |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300, help="maps per case")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="directory of signing.json / signing.md")
    args = parser.parse_args()
    rows = bench(args.repeat)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "signing.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = markdown(rows, args.repeat)
    (args.out / "signing.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
