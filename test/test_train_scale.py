"""Training at scale on the CPU: DataLoader order, DDP (gloo) equivalence, torchrun CLI,
device errors, TensorBoard event files."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from codealign_ros.data.world import World, WorldConfig
from codealign_ros.config.profiles import load_profile
from codealign_ros.train import distributed, stages
from codealign_ros.train.dataset import StepLoader
from codealign_ros.train.distributed import Accel
from codealign_ros.train.loop import LoopConfig, fit
from codealign_ros.train.tb import read_scalars

ROOT = Path(__file__).resolve().parents[1]
N = 16  # toy samples


class _Toy(torch.utils.data.Dataset):
    """Sample i: (x_i in R^3, y_i), fixed; no augmentation."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(7)
        self.x, self.y = torch.randn(N, 3, generator=g), torch.randn(N, 1, generator=g)

    def __len__(self) -> int:
        return N

    def __getitem__(self, k: int) -> torch.Tensor:
        i = k % N  # StepLoader indices are epoch * len + i
        return torch.cat([torch.tensor([float(i)]), self.x[i], self.y[i]])


def _stack(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(items)


def _train_toy(batch: int, steps: int, ckpt: Path | None, accel: Accel,
               logdir: str = "", fail_at: int = -1) -> torch.nn.Linear:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)

    def step(i: int, b: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if i == fail_at:
            raise KeyboardInterrupt  # the run is interrupted here
        return torch.nn.functional.mse_loss(model(b[:, 1:4]), b[:, 4:]), {}

    loader = StepLoader(_Toy(), _stack, batch, seed=3, rank=accel.rank, world=accel.world)
    cfg = LoopConfig(steps=steps, lr=0.05, progress=False, checkpoint_every=2, logdir=logdir)
    fit("toy", {"model": model}, list(model.parameters()), step, cfg, ckpt, loader, accel)
    return model


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    accel = distributed.setup("cpu")
    try:
        _train_toy(2, 6, Path(out) / "toy.ckpt", accel)
        torch.manual_seed(rank)  # replicas that differ, as after a data-dependent revival
        module = torch.nn.Linear(2, 2)
        distributed.broadcast_module(module)
        torch.save(module.state_dict(), Path(out) / f"broadcast{rank}.pt")
    finally:
        distributed.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_matches_one_process_on_the_doubled_batch(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "toy.ckpt", weights_only=False)  # written by rank 0 only
    assert ddp["step"] == 6 and not dist.is_initialized()
    single = _train_toy(4, 6, None, Accel())
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp["modules"]["model"][k], v, rtol=1e-5, atol=1e-6)
    half = _train_toy(2, 6, None, Accel())  # one process on the half batch differs
    assert not torch.allclose(half.weight, single.weight, atol=1e-4)
    b0, b1 = (torch.load(tmp_path / f"broadcast{r}.pt") for r in (0, 1))
    assert all(torch.equal(b0[k], b1[k]) for k in b0)  # rank 0's values everywhere


def _order(loader: StepLoader, steps: int, start: int = 0) -> list[list[int]]:
    it = loader.batches(start)
    return [next(it)[:, 0].long().tolist() for _ in range(steps)]


def test_loader_reproduces_the_sample_order_from_the_seed() -> None:
    make = lambda seed, rank=0, world=1, b=2: StepLoader(_Toy(), _stack, b, seed=seed,  # noqa
                                                         rank=rank, world=world)
    a, b = _order(make(3), 12), _order(make(3), 12)
    assert a == b != _order(make(4), 12)
    epoch0, epoch1 = sum(a[:8], []), sum(a[8:] + _order(make(3), 16)[12:16], [])
    assert sorted(epoch0) == list(range(N)) and sorted(epoch1) == list(range(N))
    assert epoch0 != epoch1  # reshuffled per epoch
    assert _order(make(3), 12, start=5) == a[5:] + _order(make(3), 17)[12:17]  # resume
    shards = [_order(make(3, r, 2), 4) for r in (0, 1)]  # ranks split each epoch
    assert sorted(sum(shards[0] + shards[1], [])) == list(range(N))
    workers = StepLoader(_Toy(), _stack, 2, seed=3, workers=2)
    assert _order(workers, 12) == a


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train_toy(2, 7, tmp_path / "r.ckpt", Accel(), fail_at=5)  # checkpoint at step 4
    assert torch.load(tmp_path / "r.ckpt", weights_only=False)["step"] == 4
    resumed = _train_toy(2, 7, tmp_path / "r.ckpt", Accel())
    straight = _train_toy(2, 7, None, Accel())
    torch.testing.assert_close(resumed.weight, straight.weight)


def test_event_files_are_written_and_readable(tmp_path: Path) -> None:
    _train_toy(2, 5, tmp_path / "toy.ckpt", Accel(), logdir=str(tmp_path / "runs"))
    scalars = read_scalars(tmp_path / "runs" / "toy")
    assert [s for s, _ in scalars["loss/total"]] == list(range(5))
    assert {"lr", "time/step_s", "time/data_s"} <= set(scalars)
    assert all(v > 0 for _, v in scalars["lr"])


def test_stage_batches_come_from_the_groups_own_frames_only() -> None:
    world = lambda seed: list(World(WorldConfig(seed=seed, agents=2, azimuth_steps=256,  # noqa
                                                background_vehicles=4), 0).frames(2, f"sc{seed}"))
    data = stages.StageData(load_profile("mini"), {"g1": world(1), "g2": world(2)}, seed=0)
    batches = data.loader("g2", ["m2"]).batches()
    keys = [k for _ in range(4) for k in next(batches).keys]
    assert keys and all(k.startswith("sc2/") for k in keys)
    assert len(next(batches).keys) == data.batch_size == 2


def test_device_cuda_without_cuda_fails_with_one_clear_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: --device cuda is valid")
    with pytest.raises(distributed.DeviceError, match="CUDA is not available"):
        distributed.resolve_device("cuda")
    proc = subprocess.run([sys.executable, "-m", "codealign_ros", "train", "--device", "cuda",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "CUDA is not available" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_amp_is_ignored_on_the_cpu_with_a_message(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "codealign.train"):
        assert distributed.setup("cpu", amp=True).amp_dtype is None
    assert "--amp ignored" in caplog.text


def test_torchrun_cli_trains_with_two_gloo_processes_rank0_writes(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "models"
    for split, scenes in (("train", 4), ("validate", 1)):
        subprocess.run([sys.executable, "-m", "codealign_ros", "synth", "--out", str(data),
                        "--format", "opv2v", "--scenes", str(scenes), "--frames", "2",
                        "--agents", "2", "--seed", "3", "--split", split], check=True,
                       capture_output=True, cwd=ROOT, timeout=120)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "codealign_ros", "train", "--stage",
           "base", "--only", "m1", "--steps", "3", "--data", str(data), "--out", str(out),
           "--device", "cpu", "--batch-size", "1", "--workers", "1", "--val-frames", "2",
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = (out / "base_m1.md").read_text()
    assert "batch 2" in card and "TensorBoard run" in card and "Validation AP30/50/70" in card
    run = out / "runs" / "base_m1"
    scalars = read_scalars(run)
    assert [s for s, _ in scalars["loss/total"]] == [0, 1, 2] and "val/ap30" in scalars
    pids = {f.name.split(".")[4] for f in run.glob("events.out.tfevents.*")}
    assert len(pids) == 1  # rank 0 alone logs
    assert torch.load(out / "checkpoints" / "base_m1.ckpt", weights_only=False)["step"] == 3
