"""`codealign demo`: the `demo` launch graph on a generated mini-V2X scene, with a summary.

1. The scene (codealign_ros.demo.scene): one generated OPV2V-layout scenario, two connected
   vehicles and a road-side unit, converted to a rosbag2 (cached under data/demo/).
2. The `demo` graph of config/launch.yaml, run by the embedded launcher (`run_specs`) in its
   own ROS_DOMAIN_ID: the bag player, one vehicle_node per agent (ego m1 LiDAR, the other
   vehicle m4 cameras, the road-side unit m2 LiDAR by default: modalities.yaml `assignment`),
   the ego's fusion_node, plus
   - codemap_monitor with publish_images: every received code map as a colourised image,
   - demo_recorder (codealign_ros.demo.recorder): records everything into an MCAP rosbag2
     (<out>/recording, codealign_ros.demo.recording), prints the status line each second,
     gates the player's start on every node being up, and ends the run once the fusion node
     answered every evaluated frame.
   The bag plays at rate 1.0 (10 Hz) by default. The ego-only baseline costs no second live
   receiver: after the run the ego's recorded code maps go alone through a ReceiverPipeline of
   the same weights and backend (codealign_ros.demo.baseline).
   The bag carries TAIL_FRAMES frames after the evaluated ones, so the player (whose exit
   also ends the graph) does not cut off the last evaluated frame.
3. From the recording: the summary (codealign_ros.demo.summary) printed and written to
   <out>/summary.json, the BEV picture of the frame where cooperation helps most
   (codealign_ros.demo.bev_picture, with the agents' code maps) and the animated BEV of every
   frame (codealign_ros.demo.animation, <out>/demo_bev.gif).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from codealign_ros.config import config_dir, lookup, sensor_topics
from codealign_ros.config.share import resolve_shipped
from codealign_ros.errors import CodeAlignError
from codealign_ros.launch import NodeSpec, format_agents, load_graph, parse_agents

GRAPH = "demo"
DEFAULT_SEED = 191
DEFAULT_FRAMES = 36
DEFAULT_RATE = 1.0  # real time: the bag's 10 Hz
TAIL_FRAMES = 2
BACKGROUND_NICE = 10  # peers and observers of the demo graph, see background()
LINGER_S = 10.0  # the player stays up after the bag so the last frames are fused (the
# recorder ends the graph as soon as they are)
RECORDER_MODULE = "codealign_ros.demo.recorder"
PROFILES_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
FASTDDS_FILE = "fastdds.xml"  # config/: the shared-memory profile (see its comment)


class DemoError(CodeAlignError, RuntimeError):
    """The demo could not run (missing weights, the graph failed, no detections)."""

    reason: str = "demo"


@dataclasses.dataclass
class DemoOptions:
    """What `codealign demo` runs (the command-line flags)."""

    frames: int = DEFAULT_FRAMES
    seed: int = DEFAULT_SEED
    rate: float = DEFAULT_RATE
    modalities: str = ""  # "m1,m4,m2": per bag agent (ego first); "" = modalities.yaml
    model_dir: str = "models/mini"
    profile: str = "mini"
    backend: str = "auto"
    data_dir: Path = Path("data/demo")
    out_dir: Path = Path("out/demo")
    picture: Path | None = None  # default <out_dir>/demo_bev.png
    domain_id: int | None = None  # default: derived from the process id
    seconds: float = 600.0  # the recorder ends the run after this long in any case
    record_clouds: str = "none"  # LiDAR clouds in the recording: "none" (the pictures read the
    # scene bag's), the "ego"'s, or "all" agents'
    translate: str = "sender"  # foreign groups: "sender" D2C into the ego space (the paper's
    # paradigm, vehicle_node translate_to) or "receiver" (the fusion node's code-to-code UCT)


# -- graph ------------------------------------------------------------------------------------
def demo_agents(bag: Path, modalities: str) -> list[tuple[str, str]]:
    """(agent, modality) in bag order (ego first); `modalities` overrides the assignment."""
    agents = parse_agents("auto", bag)
    if not modalities:
        return agents
    chosen = [m.strip() for m in modalities.split(",") if m.strip()]
    if len(chosen) != len(agents):
        raise DemoError(f"--modalities {modalities!r}: the bag has {len(agents)} agents "
                        f"({', '.join(a for a, _ in agents)})")
    return parse_agents(format_agents(list(zip([a for a, _ in agents], chosen))))


def vehicle_topics(agent: str, modality: str) -> list[str]:
    """Topics a vehicle_node of `modality` subscribes (config.sensor_topics)."""
    cameras = int(lookup("modalities", "modalities", modality).get("cameras") or 0)
    return [name for _, name in sensor_topics(agent, cameras)]


def check_models(model_dir: str, profile: str, agents: list[tuple[str, str]]) -> None:
    """DemoError naming the weight files the graph needs and `model_dir` lacks."""
    from codealign_ros.config.groups import group_of
    from codealign_ros.models.store import ModelStore

    store, ego_group = ModelStore(model_dir, profile), group_of(agents[0][1])
    names = {f"base_{m}" for _, m in agents}
    names |= {store.codespace_name(group_of(m)) for _, m in agents}
    names |= {f"uct_{group_of(m)}" for _, m in agents if group_of(m) != ego_group}
    missing = sorted(str(store.path(n)) for n in names if not store.has(n))
    if missing:
        raise DemoError(f"missing weights: {', '.join(missing)}; train them with `make models` "
                        f"or pass --model-dir")


def codemap_images() -> NodeSpec:
    """codemap_monitor publishing every received map as an image (no status lines)."""
    return NodeSpec(name="codemap_images", executable="codemap_monitor", package="codealign_ros",
                    module="codealign_ros.nodes.codemap_monitor",
                    parameters={"publish_images": True, "report": False})


def sender_translating(spec: NodeSpec, ego_modality: str) -> NodeSpec:
    """A vehicle of a group other than the ego's also sends its codes D2C-translated into the
    ego's space (vehicle_node translate_to); any other node unchanged."""
    from codealign_ros.config.groups import group_of

    ego, modality = group_of(ego_modality), spec.parameters.get("modality")
    if spec.executable != "vehicle_node" or not modality or group_of(modality) == ego:
        return spec
    return dataclasses.replace(spec, parameters={**spec.parameters, "translate_to": [ego]})


def demo_specs(opts: DemoOptions, bag: Path, agents: list[tuple[str, str]], frames: int,
               record: Path) -> list[NodeSpec]:
    """The demo graph's nodes plus the code-map images and the recorder (`record`: its MCAP
    recording). The ego-only baseline is no live node: it is computed afterwards from the
    recorded ego code maps (demo.baseline)."""
    from codealign_ros.demo.recording import bag_topics

    # the player starts once every vehicle's sensor subscriptions and the recorder's bag
    # topics matched
    ids = [a for a, _ in agents]
    clouds = {"none": [], "ego": ids[:1], "all": ids}[opts.record_clouds]
    recorded = [name for name, _, _ in bag_topics(ids, clouds)]
    wait_for = sum(len(vehicle_topics(a, m)) for a, m in agents) + len(recorded)
    # the player sends only what a node of the graph takes (ros2 bag play --topics): a LiDAR
    # agent's camera images and a camera agent's cloud would cost serialisation for no one
    played = sorted({*recorded, *(t for a, m in agents for t in vehicle_topics(a, m))})
    specs = load_graph(GRAPH, {"bag": str(bag), "agents": format_agents(agents),
                               "rate": opts.rate, "wait_for": wait_for, "backend": opts.backend,
                               "profile": opts.profile, "model_dir": opts.model_dir,
                               "key_dir": str(opts.out_dir / "keys")})
    fusion = next(s for s in specs if s.executable == "fusion_node")
    fusion = dataclasses.replace(fusion, parameters={**fusion.parameters,
                                                     "modality": agents[0][1]})
    specs = [fusion if s.name == fusion.name else s for s in specs]
    if opts.translate == "sender":
        specs = [sender_translating(s, agents[0][1]) for s in specs]
    images = codemap_images()
    vehicles = [s for s in specs if s.executable == "vehicle_node"]
    recorder = NodeSpec(
        name="demo_recorder", executable="demo_recorder", package="codealign_ros",
        module=RECORDER_MODULE, parameters={
            "out": str(record), "ego": agents[0][0], "agents": ids,
            "record_clouds": opts.record_clouds, "frames": frames,
            "timeout_s": float(opts.seconds), "codemap_publishers": len(agents),
            "codemap_subscribers": 3,  # the fusion node, the code-map images, the recorder
            "processing_topics": [f"/{v.name}/processing_time_ms" for v in vehicles],
            "latency_topic": f"/{fusion.name}/latency_ms"})
    player = [dataclasses.replace(s, arguments=[*s.arguments, "--linger", str(LINGER_S),
                                                "--topics", *played])
              for s in specs if s.executable == "bag_player"]
    others = [s for s in specs if s.executable != "bag_player"]
    return [background(recorder), *(background(s) if s.executable == "vehicle_node"
                                    and s.name != f"vehicle_{ids[0]}" else s for s in others),
            background(images), *player]


def background(spec: NodeSpec) -> NodeSpec:
    """`spec` at a lower CPU priority (nice BACKGROUND_NICE): on one small machine the demo
    runs what would be other vehicles' computers (the peers' vehicle nodes) and observers
    (recorder, code-map images) beside the ego's vehicle and fusion nodes, whose latency is
    the one measured; without it they queue behind each other's bursts."""
    return dataclasses.replace(spec, nice=BACKGROUND_NICE)


def demo_keys(out_dir: Path, agents: list[tuple[str, str]]) -> Path:
    """A fresh key pair per agent for this run in <out_dir>/keys (the receivers' trust store:
    the demo's maps are signed and verified like on the road)."""
    from codealign_ros.core.signing import generate_keys

    keys = out_dir / "keys"
    for agent, _ in agents:
        generate_keys(agent, keys, overwrite=True)
    return keys


# -- run --------------------------------------------------------------------------------------
def _domain(opts: DemoOptions) -> int:
    return opts.domain_id if opts.domain_id is not None else 1 + os.getpid() % 100


def graph_env(domain: int, out_dir: Path) -> dict[str, str]:
    """Environment of the nodes: their own domain, discovery on this machine unless chosen
    otherwise, and config/fastdds.xml unless the user set a Fast DDS profiles file (env.sh
    exports it, so this only matters outside env.sh)."""
    env = {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE":
           os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")}
    if not os.environ.get(PROFILES_ENV):
        env[PROFILES_ENV] = str((config_dir() / FASTDDS_FILE).resolve())
    return env


def run_graph(specs: list[NodeSpec], env: dict[str, str]) -> int:
    """Run the nodes with the embedded launcher; the launcher's exit code."""
    from codealign_ros.nodes.launcher import run_specs

    return run_specs(specs, env)


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """Scene -> graph -> summary (+ picture); returns the summary (also in summary.json)."""
    from codealign_ros.demo.animation import draw_animation
    from codealign_ros.demo.picture import draw_picture
    from codealign_ros.demo.recording import load_recording, read_clouds
    from codealign_ros.demo.scene import SceneSpec, read_truth, scene_bag
    from codealign_ros.demo.summary import summarize
    from codealign_ros.demo.viz_configs import write_configs
    from codealign_ros.config.profiles import load_profile

    if opts.frames < 2 or opts.rate <= 0:
        raise DemoError("--frames must be >= 2 and --rate > 0")
    started = time.monotonic()
    bag = scene_bag(SceneSpec(opts.seed, opts.frames + TAIL_FRAMES), opts.data_dir)
    agents = demo_agents(bag, opts.modalities)
    check_models(opts.model_dir, opts.profile, agents)
    ensure_export(opts)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    record = opts.out_dir / "recording"
    demo_keys(opts.out_dir, agents)
    specs = demo_specs(opts, bag, agents, opts.frames, record)
    domain = _domain(opts)
    print(f"demo: {len(specs)} nodes in ROS_DOMAIN_ID {domain}; agents "
          f"{format_agents(agents)}; bag {bag} at rate {opts.rate}", flush=True)
    code = run_graph(specs, graph_env(domain, opts.out_dir))
    records = load_recording(record) if (record / "metadata.yaml").is_file() else []
    kinds = {r["kind"] for r in records}
    if "ready" not in kinds:
        why = f"within --seconds {opts.seconds}" if "timeout" in kinds else \
            f"(launcher exit code {code})"
        raise DemoError(f"the graph did not come up {why}; see the node output above")
    records += ego_only_baseline(record, opts, agents[0])
    truth = read_truth(bag, [a for a, _ in agents])
    stamps = truth.stamps[:opts.frames]
    profile = load_profile(opts.profile)
    summary = {"scene": {"bag": str(bag), "seed": opts.seed, "frames": opts.frames,
                         "tail_frames": TAIL_FRAMES},
               "agents": dict(agents), "ego": agents[0][0], "rate": opts.rate,
               "domain_id": domain, "launcher_exit_code": code, "recording": str(record),
               "ended_by": "recorder" if "done" in kinds else "timeout" if "timeout" in kinds
               else "graph exit",
               **summarize(records, truth, agents[0][0], dict(agents), stamps, profile),
               "wall_s": round(time.monotonic() - started, 1)}
    picture = opts.picture or opts.out_dir / "demo_bev.png"
    clouds = read_clouds(bag if opts.record_clouds == "none" else record, agents[0][0])
    summary["picture"] = str(draw_picture(picture, records, truth, clouds, agents, stamps,
                                          profile, summary))
    summary["animation"] = str(draw_animation(picture.with_suffix(".gif"), records, truth,
                                              clouds, agents, stamps, profile))
    summary["viz_configs"] = [str(p) for p in write_configs(opts.out_dir, list(dict(agents)))]
    (opts.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def ensure_export(opts: DemoOptions) -> None:
    """`codealign export` of the model dir unless a fresh one exists, so that ONNX nodes start
    without PyTorch (pipeline.deploy)."""
    from codealign_ros.pipeline.deploy import DEPLOY_KINDS, export_fresh

    if opts.backend not in DEPLOY_KINDS or export_fresh(opts.model_dir, opts.profile):
        return
    from codealign_ros.pipeline.stages import export_all

    print(f"demo: exporting the ONNX stages of {opts.model_dir} (once)", flush=True)
    export_all(Path(opts.model_dir), profile=opts.profile)


def ego_only_baseline(recording: Path, opts: DemoOptions,
                      ego: tuple[str, str]) -> list[dict[str, Any]]:
    """Ego-only detections of the recorded ego maps (same weights and backend, no peers)."""
    from codealign_ros.demo.baseline import ego_maps, ego_only_records

    if not (recording / "metadata.yaml").is_file():
        return []
    records = ego_only_records(ego_maps(recording, ego[0]), opts.model_dir, ego[0], ego[1],
                               opts.backend, opts.profile)
    print(f"demo: ego-only baseline from {len(records)} recorded ego code maps", flush=True)
    return records


# -- command line ----------------------------------------------------------------------------
def _nonzero_drops(drops: dict[str, Any]) -> str:
    parts = [f"{node}: {reasons}" for node, entry in drops["nodes"].items()
             for reasons in [{k: v for key in ("drops", "sync_dropped", "skipped")
                              for k, v in entry.get(key, {}).items()}] if reasons]
    return f" ({'; '.join(parts)})" if parts else ""


def _ledger_lines(drops: dict[str, Any]) -> list[str]:
    out = []
    for node, entry in drops["nodes"].items():
        book = entry.get("ledger")
        if book:
            out.append(f"  transport  {node}: offered {book.get('offered')} = fused "
                       f"{book.get('fused')} + dropped {book.get('dropped')} + held "
                       f"{book.get('held')} ({'exact' if entry.get('balanced') else 'UNBALANCED'})")
    return out


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable lines of a summary."""
    f, ap, cb, lat = s["frames"], s["ap"], s["codemap_bytes"], s["latency_ms"]
    e2e, fus = lat["end_to_end"], lat["fusion"]
    lines = [
        "demo summary",
        f"  agents     {', '.join(f'{a}:{m}' for a, m in s['agents'].items())} (ego {s['ego']})",
        f"  frames     {f['evaluated']} evaluated of {f['evaluated_span']} (played "
        f"{f['played']}, fused {f['fused']}, ego-only {f['ego_only']}); rate {s['rate']}x; "
        f"agents fused: " + ", ".join(f"{n} in {c} frames" for n, c in s["agents_fused"].items()),
        f"  AP         ego-only  AP30 {ap['ego_only']['ap30']:.3f}  AP50 "
        f"{ap['ego_only']['ap50']:.3f}  AP70 {ap['ego_only']['ap70']:.3f}",
        f"             fused     AP30 {ap['fused']['ap30']:.3f}  AP50 {ap['fused']['ap50']:.3f}"
        f"  AP70 {ap['fused']['ap70']:.3f}",
        f"  CodeMap    {cb.get('height')} x {cb.get('width')} x {cb.get('bits')} bit: raw "
        f"{cb.get('raw')} B, coded ({cb.get('encoding')}) {cb.get('coded')} B per map "
        f"(dense float32 features: {cb.get('dense_float32')} B); {cb.get('maps')} maps",
        f"  latency    end-to-end p50 {e2e['p50']} ms, p95 {e2e['p95']} ms (ego sensor "
        f"publish -> fused detections); fusion p50 {fus['p50']} ms",
        f"  drops      {s['drops']['total']} by the nodes{_nonzero_drops(s['drops'])}; code maps "
        f"missing {sum(s['drops']['maps_missing'].values())}",
        *_ledger_lines(s["drops"]),
        f"  pictures   {s['picture']}, {s.get('animation')}; recording {s.get('recording')}",
        f"  wall time  {s['wall_s']} s (ended by {s['ended_by']}; launcher exit code "
        f"{s['launcher_exit_code']})"]
    return "\n".join(lines)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `codealign demo`."""
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                        help=f"evaluated 10 Hz frames of the scene (default {DEFAULT_FRAMES})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"scene generator seed (default {DEFAULT_SEED})")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help=f"bag playback speed factor (default {DEFAULT_RATE}: no frame "
                             f"drops on 2 CPU cores)")
    parser.add_argument("--modalities", default="",
                        help="modality per bag agent, ego first, e.g. m1,m5,m2 (default: "
                             "config/modalities.yaml assignment)")
    parser.add_argument("--model-dir", default="models/mini", help="trained weights")
    parser.add_argument("--backend", default="auto", help="inference backend of every node")
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="recording (MCAP), summary.json, pictures and RViz / Foxglove "
                             "presets go here (default out/demo)")
    parser.add_argument("--picture", type=Path, default=None,
                        help="BEV picture path (default <out>/demo_bev.png; the animation "
                             "goes beside it as .gif)")
    parser.add_argument("--seconds", type=float, default=600.0,
                        help="stop the graph after this long in any case (default 600)")
    parser.add_argument("--record-clouds", choices=("none", "ego", "all"), default="none",
                        help="LiDAR clouds recorded: none (default; the pictures read the "
                             "scene bag's), the ego's, or every agent's (about 1 MB each, "
                             "10 Hz)")
    parser.add_argument("--translate", choices=("sender", "receiver"), default="sender",
                        help="where foreign code spaces become the ego's: the sender's UCT on "
                             "its dense features (D2C, the paper's; default) or the receiver's "
                             "UCT on the received codes (C2C)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID of the demo graph (default: one derived from the "
                             "process id)")


def run_demo_cli(args: argparse.Namespace) -> int:
    """`codealign demo`: 0 when detections came through, 1 otherwise."""
    opts = DemoOptions(frames=args.frames, seed=args.seed, rate=args.rate,
                       modalities=args.modalities,
                       model_dir=str(resolve_shipped(args.model_dir)),  # from any directory
                       backend=args.backend, out_dir=args.out, picture=args.picture,
                       domain_id=args.domain_id, seconds=args.seconds,
                       record_clouds=args.record_clouds, translate=args.translate)
    try:
        summary = run_demo(opts)
    except (DemoError, ValueError) as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    print(f"demo: summary written to {opts.out_dir / 'summary.json'}")
    return 0 if summary["frames"]["fused"] else 1
