"""`codealign keys`: signing keys of agents and the receivers' trust store."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codealign_ros.config import lookup


def add_keys_parser(sub: argparse._SubParsersAction) -> None:
    """`codealign keys generate|list`."""
    keys = sub.add_parser(
        "keys", help="signing keys (ECDSA P-256) of agents and trust stores",
        description="Key pairs that sign code maps (IEEE 1609.2-style ECDSA P-256 / SHA-256). "
                    "A vehicle_node signs with <dir>/<agent>.key; a fusion_node trusts the "
                    "<agent>.pub files of its trust_store directory, each for that agent id only.")
    verbs = keys.add_subparsers(dest="keys_command", required=True)
    gen = verbs.add_parser("generate", help="write <out>/<agent>.key (0600) and <out>/<agent>.pub",
                           description="Generate a P-256 key pair for one agent: the private "
                                       "key <out>/<agent>.key (PKCS#8 PEM, mode 0600) and the "
                                       "public key <out>/<agent>.pub to copy into the trust "
                                       "stores of the receivers.")
    gen.add_argument("--agent", required=True, action="append",
                     help="agent id (ROS name characters); repeat for several agents")
    gen.add_argument("--out", type=Path, default=Path(str(lookup("codemap", "security",
                                                                 "key_dir"))),
                     help="key directory (default: codemap.yaml security.key_dir)")
    gen.add_argument("--force", action="store_true", help="replace existing keys")
    gen.set_defaults(func=run_generate)
    show = verbs.add_parser("list", help="the keys of a trust store directory and their ids",
                            description="List the trusted public keys of a directory: agent "
                                        "id (from the file name) and key id.")
    show.add_argument("dir", type=Path, help="trust store directory")
    show.set_defaults(func=run_list)


def run_generate(args: argparse.Namespace) -> int:
    """Write one key pair per --agent."""
    from codealign_ros.core.signing import SigningError, generate_keys
    from codealign_ros.core.wire import FieldLimits

    limits = FieldLimits.from_config()
    for agent in args.agent:
        if limits.reason("agent_id", agent):
            print(f"codealign keys: {agent!r} is not a valid agent id (codemap.yaml fields)",
                  file=sys.stderr)
            return 2
        try:
            private, public, kid = generate_keys(agent, args.out, args.force)
        except (SigningError, OSError) as exc:
            print(f"codealign keys: {exc}", file=sys.stderr)
            return 1
        print(f"{agent}: key id {kid}; private {private} (0600), public {public}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print agent and key id of every trusted key."""
    from codealign_ros.core.signing import SigningError, TrustStore

    try:
        store = TrustStore.from_dir(args.dir)
    except SigningError as exc:
        print(f"codealign keys: {exc}", file=sys.stderr)
        return 1
    for kid, trusted in sorted(store.keys.items(), key=lambda kv: kv[1].agent_id):
        print(f"{trusted.agent_id}\t{kid}")
    print(f"{len(store)} trusted key(s) in {args.dir}")
    return 0
