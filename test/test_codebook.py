"""Tests of the learnable codebook (eq. 9), straight-through training and ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codealign_ros.models.codebook import Codebook, CodeAssigner, CodeDecoder


def _seed() -> None:
    torch.manual_seed(0)


def test_assignment_matches_brute_force() -> None:
    _seed()
    cb = Codebook(16, 64)
    x = torch.randn(3, 64, 7, 5)
    flat = x.permute(0, 2, 3, 1).reshape(-1, 64)
    ref = torch.cdist(flat, cb.codes.detach()).argmin(dim=1).reshape(3, 7, 5)
    assert torch.equal(cb.assign(x), ref)
    d = cb.distances(x).detach().permute(0, 2, 3, 1).reshape(-1, 16)
    torch.testing.assert_close(d, torch.cdist(flat, cb.codes.detach()) ** 2, atol=1e-4, rtol=1e-4)
    assert cb.bits == 4 and Codebook(256, 8).bits == 8


def test_decode_of_codes_returns_codes_exactly() -> None:
    _seed()
    cb = Codebook(16, 64)
    fmap = cb.codes.detach().T.reshape(1, 64, 4, 4)
    idx = cb.assign(fmap)
    assert torch.equal(idx.flatten(), torch.arange(16))
    assert torch.equal(cb.decode(idx), fmap)


def test_straight_through_gradients() -> None:
    _seed()
    cb = Codebook(16, 64).train()
    x = torch.randn(2, 64, 3, 4, requires_grad=True)
    q, idx, losses = cb(x)
    # x + (q - x).detach() equals q up to float rounding only.
    torch.testing.assert_close(q.detach(), cb.decode(idx).detach(), atol=1e-6, rtol=0)
    upstream = torch.randn_like(q)
    q.backward(upstream)
    assert x.grad is not None and torch.equal(x.grad, upstream)
    assert cb.codes.grad is None
    x.grad = None
    losses["codebook"].backward()
    assert x.grad is None
    assert cb.codes.grad is not None and cb.codes.grad.abs().sum() > 0
    cb.codes.grad = None
    losses["commitment"].backward()
    assert cb.codes.grad is None and x.grad is not None and x.grad.abs().sum() > 0


def test_eval_forward_returns_decoded_codes() -> None:
    _seed()
    cb = Codebook(16, 64).eval()
    x = torch.randn(2, 64, 3, 4)
    q, idx, _ = cb(x)
    assert torch.equal(q, cb.decode(idx))
    usage = cb.usage.clone()
    assert cb.revive_dead_codes(x) == 0 and torch.equal(cb.usage, usage)


def test_dead_codes_are_revived_and_then_used() -> None:
    _seed()
    cb = Codebook(8, 16, usage_decay=0.5).train()
    with torch.no_grad():
        cb.codes[0] = 5.0
    x = 5.0 + torch.randn(2, 16, 6, 6)
    for _ in range(8):
        _, idx, _ = cb(x)
    assert torch.all(idx == 0)
    assert cb.revive_dead_codes(x) == 7
    _, idx, _ = cb(x)
    assert set(idx.unique().tolist()) == set(range(8))
    assert cb.revive_dead_codes(x) == 0


def test_weights_hash_tracks_weights() -> None:
    _seed()
    a, b = Codebook(16, 64), Codebook(16, 64)
    b.load_state_dict(a.state_dict())
    h = a.weights_hash()
    assert len(h) == 16 and h == b.weights_hash()
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    _, _, losses = a(torch.randn(1, 64, 4, 4))
    losses["codebook"].backward()
    opt.step()
    assert a.weights_hash() != h and b.weights_hash() == h


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    _seed()
    cb = Codebook(16, 64).eval()
    x = torch.randn(2, 64, 9, 11)
    idx = cb.assign(x)
    axes = {0: "batch", 2: "height", 3: "width"}
    enc, dec = tmp_path / "assign.onnx", tmp_path / "decode.onnx"
    # dynamo=False: the TorchScript exporter needs no onnxscript and handles these tiny graphs.
    torch.onnx.export(CodeAssigner(cb), (x,), str(enc), opset_version=17, dynamo=False,
                      input_names=["features"], output_names=["indices"],
                      dynamic_axes={"features": axes, "indices": {0: "batch", 1: "height", 2: "width"}})
    torch.onnx.export(CodeDecoder(cb), (idx,), str(dec), opset_version=17, dynamo=False,
                      input_names=["indices"], output_names=["features"],
                      dynamic_axes={"indices": {0: "batch", 1: "height", 2: "width"}, "features": axes})
    cpu = ["CPUExecutionProvider"]
    (onnx_idx,) = ort.InferenceSession(str(enc), providers=cpu).run(None, {"features": x.numpy()})
    np.testing.assert_array_equal(onnx_idx, idx.numpy())
    assert onnx_idx.max() < 256 and np.array_equal(onnx_idx.astype(np.uint8), onnx_idx)
    (feat,) = ort.InferenceSession(str(dec), providers=cpu).run(None, {"indices": onnx_idx})
    np.testing.assert_allclose(feat, cb.decode(idx).detach().numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("n", [15, 1, 512, 0])
def test_invalid_num_codes_raises(n: int) -> None:
    with pytest.raises(ValueError):
        Codebook(n, 64)


def _clusters(n_clusters: int, dim: int, per: int, spread: float = 0.1, scale: float = 3.0,
              seed: int = 0, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_clusters * per, dim) rows around random centres, and the centres."""
    g = torch.Generator().manual_seed(seed)
    centres = scale * torch.randn(n_clusters, dim, generator=g) + offset
    rows = centres.repeat_interleave(per, 0) + spread * torch.randn(n_clusters * per, dim,
                                                                    generator=g)
    return rows, centres


def test_kmeans_init_beats_random_init_on_clustered_data() -> None:
    _seed()
    rows, _ = _clusters(16, 8, 200)
    maps = rows.T.reshape(1, 8, 40, 80)  # as a feature map, split into two batches
    random_codes = Codebook(16, 8)
    random_cells = Codebook(16, 8).train()
    random_cells.usage.zero_()
    with torch.no_grad():  # the former initialisation: codes at random cells
        random_cells.codes.copy_(rows[torch.randperm(len(rows))[:16]])
    cb = Codebook(16, 8)
    stats = cb.kmeans_init([maps[..., :40], maps[..., 40:]], iterations=10,
                           generator=torch.Generator().manual_seed(1))
    noise = 8 * 0.1 ** 2  # expected squared error when every cluster has its own code
    error = cb.quantisation_error(rows)
    assert stats["cells"] == len(rows) and stats["error"] == pytest.approx(error, rel=1e-4)
    assert stats["error"] <= stats["seed_error"]
    assert error < 2 * noise
    assert error < 0.2 * random_cells.quantisation_error(rows)
    assert error < 0.01 * random_codes.quantisation_error(rows)
    assert torch.isclose(cb.usage.sum(), torch.tensor(1.0)) and (cb.usage > 0).all()


def test_kmeans_init_is_deterministic_and_validates_shapes() -> None:
    rows, _ = _clusters(8, 4, 50, seed=3)
    a, b = Codebook(8, 4), Codebook(8, 4)
    a.kmeans_init(rows, generator=torch.Generator().manual_seed(5))
    b.kmeans_init(rows, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.codes, b.codes)
    with pytest.raises(ValueError):
        a.kmeans_init(torch.randn(10, 5))
    with pytest.raises(ValueError):
        a.kmeans_init([])


def test_revival_fires_in_a_short_run_and_revived_codes_serve_new_data() -> None:
    _seed()
    old, _ = _clusters(16, 8, 100, seed=0)
    new, _ = _clusters(4, 8, 400, seed=1, offset=20.0)  # the features drift far away
    cb = Codebook(16, 8)
    cb.kmeans_init(old, generator=torch.Generator().manual_seed(0))
    cb.train()
    x = new.T.reshape(1, 8, 40, 40)
    fired_at, before = None, cb.quantisation_error(new)
    for step in range(60):  # a short run: codes the new data never picks must die in it
        _, idx, _ = cb(x)
        if len(cb.dead_codes()) >= 12:
            fired_at = step
            break
    assert fired_at is not None and fired_at < 50, "dead codes not detected within 50 steps"
    assert len(idx.unique()) <= 4
    revived = cb.revive_dead_codes(x, generator=torch.Generator().manual_seed(2))
    assert revived >= 12 and len(cb.dead_codes()) == 0
    after = cb.quantisation_error(new)
    assert after < 0.1 * before
    _, idx, _ = cb(x)
    assert len(idx.unique()) > 4  # revived codes are used
    assert cb.revive_dead_codes(x) == 0


def test_state_dict_keys_unchanged() -> None:
    cb = Codebook(16, 32)
    assert set(cb.state_dict()) == {"codes", "usage"}
    other = Codebook(16, 32, usage_decay=0.99, dead_fraction=0.5)
    other.load_state_dict(cb.state_dict())
    assert torch.equal(other.codes, cb.codes)


def test_rarely_used_code_is_not_dead() -> None:
    """A code serving 0.5 % of the cells (a rare foreground feature) survives revival."""
    cb = Codebook(4, 2).train()
    with torch.no_grad():
        cb.codes.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [50.0, -50.0], [-50.0, 50.0]]))
    x = torch.zeros(1, 2, 20, 40)
    x[..., 0, :4] = 10.0  # 4 of 800 cells
    for _ in range(100):
        cb(x)
    assert cb.dead_codes().tolist() == [2, 3]
    assert cb.revive_dead_codes(x) == 2
    torch.testing.assert_close(cb.codes[1], torch.tensor([10.0, 10.0]))
