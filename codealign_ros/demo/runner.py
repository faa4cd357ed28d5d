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
   also ends the graph) does not cut off the last evaluated frame, and `lead_frames` (default
   LEAD_FRAMES, 0.5 s) before them: a graph that has idled since start-up runs its first
   frames 2-5x slower (cold caches, every node's first frame at once; measured 130-260 ms
   end to end against 40-100 ms after), which says nothing of the rate it keeps. Those
   frames are played, fused and recorded, but not evaluated; the summary gives their
   latency apart (`latency_ms.lead_in`).
3. From the recording: the summary (codealign_ros.demo.summary) printed and written to
   <out>/summary.json, the BEV picture of the frame where cooperation helps most
   (codealign_ros.demo.bev_picture, with the agents' code maps) and the animated BEV of every
   frame (codealign_ros.demo.animation, <out>/demo_bev.gif).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from codealign_ros.config import config_dir, lookup, sensor_topics
from codealign_ros.errors import CodeAlignError
from codealign_ros.launch import NodeSpec, format_agents, load_graph, parse_agents

GRAPH = "demo"
DEFAULT_SEED = 191
DEFAULT_FRAMES = 36
DEFAULT_RATE = 1.0  # real time: the bag's 10 Hz
TAIL_FRAMES = 2
LEAD_FRAMES = 5  # played before the evaluated frames (see the module doc, step 2)
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
    background_cpus: str = "auto"  # cores of the peers and observers, see background_cpus()
    lead_frames: int = LEAD_FRAMES  # played, not evaluated (the graph's first frames)


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
    cpus = background_cpus(opts.background_cpus)
    return [background(recorder, cpus),
            *(background(s, cpus) if s.executable == "vehicle_node"
              and s.name != f"vehicle_{ids[0]}" else s for s in others),
            background(images, cpus), *player]


def background(spec: NodeSpec, cpus: tuple[int, ...] = ()) -> NodeSpec:
    """`spec` at a lower CPU priority (nice BACKGROUND_NICE), on the cores `cpus` only
    (() = any): on one small machine the demo runs what would be other vehicles' computers
    (the peers' vehicle nodes) and observers (recorder, code-map images) beside the ego's
    vehicle and fusion nodes, whose latency is the one measured; without it they queue
    behind each other's bursts."""
    return dataclasses.replace(spec, nice=BACKGROUND_NICE, cpus=cpus)


def background_cpus(choice: str = "auto") -> tuple[int, ...]:
    """Cores for the background nodes. "auto": the upper half of the cores this process may
    run on (core 1 of 2), so the ego's vehicle and fusion nodes always find the others free
    of peers (the peers' computers are not the ego's on the road); () with one core or
    without `taskset`. "all": no pinning. Else a comma-separated list of cores ("1" or
    "2,3"), which must be ones this process may use."""
    allowed = sorted(os.sched_getaffinity(0))
    if choice == "all":
        return ()
    if choice == "auto":
        if len(allowed) < 2 or shutil.which("taskset") is None:
            return ()
        return tuple(allowed[len(allowed) // 2:])
    try:
        cpus = tuple(sorted({int(c) for c in choice.split(",") if c.strip()}))
    except ValueError:
        cpus = ()
    if not cpus or not set(cpus) <= set(allowed):
        raise DemoError(f"--background-cpus {choice!r}: give auto, all or cores out of "
                        f"{','.join(map(str, allowed))}")
    if shutil.which("taskset") is None:
        raise DemoError("--background-cpus: `taskset` (util-linux) is not installed")
    return cpus


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
    from codealign_ros.demo.summary import lead_in_latency, summarize
    from codealign_ros.demo.viz_configs import write_configs
    from codealign_ros.config.profiles import load_profile

    if opts.frames < 2 or opts.rate <= 0 or opts.lead_frames < 0:
        raise DemoError("--frames must be >= 2, --rate > 0 and --lead-in >= 0")
    started = time.monotonic()
    lead = opts.lead_frames
    bag = scene_bag(SceneSpec(opts.seed, lead + opts.frames + TAIL_FRAMES), opts.data_dir)
    agents = demo_agents(bag, opts.modalities)
    check_models(opts.model_dir, opts.profile, agents)
    ensure_export(opts)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    record = opts.out_dir / "recording"
    demo_keys(opts.out_dir, agents)
    specs = demo_specs(opts, bag, agents, lead + opts.frames, record)
    domain = _domain(opts)
    cpus = list(background_cpus(opts.background_cpus))
    print(f"demo: {len(specs)} nodes in ROS_DOMAIN_ID {domain}; agents "
          f"{format_agents(agents)}; bag {bag} at rate {opts.rate}; peers and observers at "
          f"nice {BACKGROUND_NICE} on cores {','.join(map(str, cpus)) or 'any'}", flush=True)
    code = run_graph(specs, graph_env(domain, opts.out_dir))
    records = load_recording(record) if (record / "metadata.yaml").is_file() else []
    kinds = {r["kind"] for r in records}
    if "ready" not in kinds:
        why = f"within --seconds {opts.seconds}" if "timeout" in kinds else \
            f"(launcher exit code {code})"
        raise DemoError(f"the graph did not come up {why}; see the node output above")
    records += ego_only_baseline(record, opts, agents[0])
    truth = read_truth(bag, [a for a, _ in agents])
    stamps = truth.stamps[lead:lead + opts.frames]
    profile = load_profile(opts.profile)
    summary = {"scene": {"bag": str(bag), "seed": opts.seed, "frames": opts.frames,
                         "lead_frames": lead, "tail_frames": TAIL_FRAMES},
               "agents": dict(agents), "ego": agents[0][0], "rate": opts.rate,
               "domain_id": domain, "launcher_exit_code": code, "recording": str(record),
               "background": {"nice": BACKGROUND_NICE, "cpus": cpus},
               "ended_by": "recorder" if "done" in kinds else "timeout" if "timeout" in kinds
               else "graph exit",
               **summarize(records, truth, agents[0][0], dict(agents), stamps, profile),
               "wall_s": round(time.monotonic() - started, 1)}
    summary["latency_ms"]["lead_in"] = lead_in_latency(records, truth.stamps[:lead])
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
