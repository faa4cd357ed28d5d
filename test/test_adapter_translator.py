"""Tests of the CodeAlign alignment modules: adapter, Unified Code Translator, alignment losses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codealign_ros.models.adapter import Adapter
from codealign_ros.models.align_losses import (
    BalanceState, code_ce_loss, cosine_alignment_loss, nonempty_mask,
    target_sampling_probabilities, translation_loss_balance)
from codealign_ros.models.codebook import Codebook
from codealign_ros.config.profiles import load_profile
from codealign_ros.models.translator import VARIANTS, UnifiedCodeTranslator, UnknownTargetError

MINI = load_profile("mini")
C, D = MINI.channels, MINI.num_codes
TARGETS = {"g1": D, "g2": D, "g3": D // 2}


def _uct(variant: str = "uct", targets: dict[str, int] | None = None) -> UnifiedCodeTranslator:
    torch.manual_seed(0)
    return UnifiedCodeTranslator(C, targets or TARGETS, hidden=C, variant=variant)


def _assert_all_grads(module: torch.nn.Module) -> None:
    missing = [n for n, p in module.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"parameters without gradient: {missing}"


# -- adapter ------------------------------------------------------------------------------
def test_adapter_shape_blocks_and_gradients() -> None:
    torch.manual_seed(0)
    ad = Adapter(C).train()
    assert len(ad.blocks) == 4
    x = torch.randn(2, C, 9, 7)
    y = ad(x)
    assert y.shape == x.shape and torch.all(y >= 0)
    y.square().mean().backward()
    _assert_all_grads(ad)


def test_adapter_zero_init_is_relu_and_bad_input_raises() -> None:
    ad = Adapter(C, zero_init_residual=True).eval()
    x = torch.randn(1, C, 5, 5)
    assert torch.allclose(ad(x), torch.relu(x), atol=1e-6)
    with pytest.raises(ValueError):
        ad(torch.randn(1, C + 1, 5, 5))
    with pytest.raises(ValueError):
        Adapter(0)


# -- translator ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_translator_shapes_and_every_parameter_gets_gradient(variant: str) -> None:
    tr = _uct(variant)
    x = torch.randn(2, C, 8, 6, requires_grad=True)
    loss = torch.zeros(())
    for name, d in TARGETS.items():
        logits = tr(x, name)
        assert logits.shape == (2, d, 8, 6)
        idx = tr.translate(x, name)
        assert idx.dtype == torch.int64 and idx.shape == (2, 8, 6)
        assert torch.equal(idx, logits.argmax(1))
        loss = loss + logits.square().mean()
    loss.backward()
    _assert_all_grads(tr)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_uct_embedding_steers_output_and_targets_differ() -> None:
    tr = _uct().eval()
    x = torch.randn(1, C, 6, 6)
    with torch.no_grad():
        a, b = tr(x, "g1"), tr(x, "g2")
        assert not torch.allclose(a, b, atol=1e-4)
        tr.embeddings["g1"].add_(torch.randn(1, C))
        assert not torch.allclose(tr(x, "g1"), a, atol=1e-4)
        assert torch.equal(tr(x, "g2"), b)


def test_multi_head_heads_differ_per_target() -> None:
    tr = _uct("multi_head").eval()
    assert tr.heads["g1"] is not tr.heads["g2"]
    x = torch.randn(1, C, 6, 6)
    with torch.no_grad():
        assert not torch.allclose(tr(x, "g1"), tr(x, "g2"), atol=1e-4)
    assert not hasattr(tr, "embeddings")


def test_one_to_one_cost_is_n_times_single() -> None:
    many = _uct("one_to_one", {"a": D, "b": D, "c": D})
    single = _uct("one_to_one", {"a": D})
    assert many.trainable_parameters() == 3 * single.trainable_parameters()
    assert many.switching_parameters("b") == single.trainable_parameters()
    shared = _uct("multi_head", {"a": D, "b": D, "c": D}).trainable_parameters()
    assert shared < many.trainable_parameters()


@pytest.mark.parametrize("profile", ["mini", "opv2v"])
def test_uct_switching_parameters_are_tiny_next_to_multi_head(profile: str) -> None:
    p = load_profile(profile)
    targets = {"a": p.num_codes, "b": p.num_codes}
    uct = UnifiedCodeTranslator(p.channels, targets, hidden=p.channels, variant="uct")
    mh = UnifiedCodeTranslator(p.channels, targets, hidden=p.channels, variant="multi_head")
    assert uct.switching_parameters("a") == p.channels  # the 1 x C' embedding
    assert uct.switching_parameters("a") / mh.switching_parameters("a") < 0.05
    assert uct.trainable_parameters() < mh.trainable_parameters()


def test_unknown_target_and_bad_arguments() -> None:
    tr = _uct()
    with pytest.raises(UnknownTargetError) as err:
        tr(torch.randn(1, C, 4, 4), "nope")
    assert isinstance(err.value, KeyError) and "g1" in str(err.value) and "nope" in str(err.value)
    for call in (lambda: tr.export_module("nope"), lambda: tr.switching_parameters("nope")):
        with pytest.raises(UnknownTargetError):
            call()
    with pytest.raises(ValueError):
        tr(torch.randn(1, C + 1, 4, 4), "g1")
    with pytest.raises(ValueError):
        UnifiedCodeTranslator(C, TARGETS, variant="bogus")
    with pytest.raises(ValueError):
        UnifiedCodeTranslator(C, {})
    with pytest.raises(ValueError):
        UnifiedCodeTranslator(C, {"a.b": D})
    with pytest.raises(ValueError):
        tr.add_target("g1", D)
    with pytest.raises(ValueError):
        tr.add_target("keys", D)


@pytest.mark.parametrize("variant", ["uct", "multi_head"])
def test_add_target_leaves_trunk_and_old_targets_untouched(variant: str) -> None:
    tr = _uct(variant, {"g1": D}).eval()
    trunk = {k: v.clone() for k, v in tr.trunk.state_dict().items()}
    x = torch.randn(1, C, 5, 5)
    with torch.no_grad():
        before = tr(x, "g1")
    new = tr.add_target("g4", D)
    assert new and all(any(p is q for q in tr.parameters()) for p in new)
    wider = tr.add_target("g5", 2 * D)
    assert all(torch.equal(v, tr.trunk.state_dict()[k]) for k, v in trunk.items())
    with torch.no_grad():
        assert torch.equal(tr(x, "g1"), before)
        assert tr(x, "g4").shape == (1, D, 5, 5) and tr(x, "g5").shape == (1, 2 * D, 5, 5)
    # Train only the new target's parameters: the trunk stays bit-identical.
    tr.train().requires_grad_(False)
    for p in new:
        p.requires_grad_(True)
    tr(x, "g4").square().mean().backward()
    with torch.no_grad():
        for p in tr.parameters():
            if p.grad is not None:
                p -= p.grad
    assert all(p.grad is not None for p in new)
    assert all(torch.equal(v, tr.trunk.state_dict()[k]) for k, v in trunk.items())
    with torch.no_grad():
        assert torch.equal(tr(x, "g1"), before)
    assert variant != "uct" or len(wider) == 3  # embedding + widened output conv


def test_to_codes_straight_through() -> None:
    torch.manual_seed(0)
    cb = Codebook(D, C).requires_grad_(False)
    logits = torch.randn(2, D, 5, 4, requires_grad=True)
    feats = UnifiedCodeTranslator.to_codes(logits, cb)
    assert feats.shape == (2, C, 5, 4)
    assert torch.equal(feats, cb.decode(logits.argmax(1)))
    feats.square().sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    soft = UnifiedCodeTranslator.to_codes(logits, cb, hard=False, tau=0.5)
    ref = torch.einsum("bdhw,dc->bchw", torch.softmax(logits / 0.5, 1), cb.codes)
    assert torch.allclose(soft, ref, atol=1e-6)
    g = UnifiedCodeTranslator.to_codes(logits, cb, gumbel=True)
    flat = g.detach().permute(0, 2, 3, 1).reshape(-1, C)
    gap = (flat[:, None, :] - cb.codes[None]).abs().amax(dim=2).amin(dim=1)
    assert float(gap.max()) < 1e-6  # every cell is exactly one of the codes
    with pytest.raises(ValueError):
        UnifiedCodeTranslator.to_codes(logits[:, :-1], cb)


def test_gradient_reaches_translator_through_frozen_codebook_and_decoder() -> None:
    tr = _uct()
    cb = Codebook(D, C).requires_grad_(False)
    decoder = torch.nn.Conv2d(C, 2, 1).requires_grad_(False)  # stands in for the frozen backend
    feats = tr.to_codes(tr(torch.randn(1, C, 6, 6), "g1"), cb)
    decoder(feats).square().mean().backward()
    assert tr.embeddings["g1"].grad is not None and tr.embeddings["g1"].grad.abs().sum() > 0
    assert tr.embeddings["g2"].grad is None
    assert tr.trunk.stem.weight.grad is not None and tr.trunk.stem.weight.grad.abs().sum() > 0


# -- ONNX ---------------------------------------------------------------------------------
def _onnx_session(module: torch.nn.Module, x: torch.Tensor, path: Path, out_axes: dict):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    torch.onnx.export(module, (x,), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": out_axes})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda t: sess.run(None, {"x": t.numpy()})[0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("error::torch.jit.TracerWarning")
def test_onnx_adapter_matches_pytorch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ad = Adapter(C).train()
    with torch.no_grad():
        for _ in range(3):
            ad(torch.randn(2, C, 8, 8) * 2 + 0.5)  # non-trivial BN running statistics
    ad.eval()
    x, x2 = torch.randn(2, C, 12, 10), torch.randn(1, C, 7, 9)  # x2: dynamic shape
    run = _onnx_session(ad, x, tmp_path / "adapter.onnx", {0: "b", 2: "h", 3: "w"})
    with torch.no_grad():
        np.testing.assert_allclose(run(x), ad(x).numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(run(x2), ad(x2).numpy(), atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("error::torch.jit.TracerWarning")
@pytest.mark.parametrize("variant,target", [("uct", "g3"), ("uct", "g1"), ("multi_head", "g2")])
def test_onnx_translator_indices_match_pytorch(tmp_path: Path, variant: str, target: str) -> None:
    tr = _uct(variant).eval()
    with torch.no_grad():  # larger layer scale so that the ConvNeXt blocks matter
        for name, p in tr.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    x = torch.randn(2, C, 11, 9)
    run = _onnx_session(tr.export_module(target), x, tmp_path / "uct.onnx",
                        {0: "b", 1: "h", 2: "w"})
    idx = run(x)
    with torch.no_grad():
        ref = tr.translate(x, target)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref.numpy())
    assert idx.max() < TARGETS[target]
    cb = Codebook(TARGETS[target], C).eval()
    np.testing.assert_allclose(cb.decode(torch.from_numpy(idx)).detach().numpy(),
                               cb.decode(ref).detach().numpy(), atol=1e-4, rtol=0)


# -- losses -------------------------------------------------------------------------------
def test_cosine_loss_identical_opposite_and_same_modality() -> None:
    f = torch.randn(1, C, 6, 6)
    same = torch.cat([f, 3 * f]).requires_grad_(True)
    loss = cosine_alignment_loss(same, ["m1", "m2"])
    assert abs(float(loss.detach())) < 1e-6
    loss.backward()
    assert same.grad is not None
    opp = torch.cat([f, -f])
    assert float(cosine_alignment_loss(opp, ["m1", "m2"])) == pytest.approx(2.0, abs=1e-5)
    assert float(cosine_alignment_loss(opp, ["m1", "m2"], reduction="sum")) == pytest.approx(2.0)
    # Same-modality pairs are ignored: only the (m1, m2) pairs count.
    three = torch.cat([f, -f, f])
    assert float(cosine_alignment_loss(three, ["m1", "m1", "m2"])) == pytest.approx(1.0, abs=1e-5)
    z = cosine_alignment_loss(opp.requires_grad_(True), ["m1", "m1"])
    assert float(z.detach()) == 0.0 and z.requires_grad


def test_cosine_loss_respects_samples_and_mask() -> None:
    f = torch.randn(1, C, 4, 4)
    feats = torch.cat([f, -f, f, f])
    mods = ["m1", "m2", "m1", "m2"]
    # Two samples of two agents: sample 0 opposite (2), sample 1 identical (0).
    assert float(cosine_alignment_loss(feats, mods, [2, 2])) == pytest.approx(1.0, abs=1e-5)
    by_id = cosine_alignment_loss(feats, mods, batch_of=[0, 0, 1, 1])
    assert float(by_id) == pytest.approx(1.0, abs=1e-5)
    # Mask: only cells where agents agree are valid -> loss 0.
    a = torch.randn(1, C, 4, 4)
    b = a.clone()
    b[..., :2] = -a[..., :2]
    mask = torch.zeros(2, 1, 4, 4)
    mask[..., 2:] = 1
    ab = torch.cat([a, b])
    assert float(cosine_alignment_loss(ab, ["m1", "m2"], mask=mask)) == pytest.approx(0.0, abs=1e-5)
    assert float(cosine_alignment_loss(ab, ["m1", "m2"])) == pytest.approx(1.0, abs=1e-5)
    empty = torch.cat([a, torch.zeros_like(a)])
    m = nonempty_mask(empty)
    assert float(cosine_alignment_loss(empty, ["m1", "m2"], mask=m)) == 0.0
    with pytest.raises(ValueError):
        cosine_alignment_loss(feats, mods, [1, 1])
    with pytest.raises(ValueError):
        cosine_alignment_loss(feats, mods[:3])
    with pytest.raises(ValueError):
        cosine_alignment_loss(feats, mods, mask=torch.ones(4, 2, 4, 4))


def test_translation_loss_balance_favours_harder_targets() -> None:
    state = BalanceState(momentum=0.5)
    a = torch.tensor(1.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    total, w = translation_loss_balance({"a": a, "b": b}, state)
    assert w["b"] > w["a"] and sum(w.values()) == pytest.approx(2.0)
    assert w["b"] == pytest.approx(1.5)
    assert float(total.detach()) == pytest.approx(0.5 * 1 + 1.5 * 3)
    total.backward()
    assert float(a.grad) == pytest.approx(w["a"]) and float(b.grad) == pytest.approx(w["b"])
    # EMA: b improves to 1.0 -> running 2.0; a stays 1.0.
    _, w = translation_loss_balance({"a": torch.tensor(1.0), "b": torch.tensor(1.0)}, state)
    assert w["b"] == pytest.approx(2 * 2.0 / 3.0)
    probs = target_sampling_probabilities(state, ["a", "b", "new"])
    assert sum(probs.values()) == pytest.approx(1.0) and probs["b"] > probs["a"]
    _, plain = translation_loss_balance({"a": a, "b": b}, None)
    assert plain == {"a": 1.0, "b": 1.0}
    rel = BalanceState(momentum=0.0, relative=True)
    translation_loss_balance({"a": torch.tensor(4.0), "b": torch.tensor(1.0)}, rel)
    _, w = translation_loss_balance({"a": torch.tensor(1.0), "b": torch.tensor(1.0)}, rel)
    assert w["b"] > w["a"]  # a improved 4x, b not at all
    with pytest.raises(ValueError):
        translation_loss_balance({"a": torch.tensor(float("nan"))}, state)


def test_translator_settings_read_the_profile_and_reject_unknown_values() -> None:
    from codealign_ros.config import ConfigError
    from codealign_ros.config.profiles import Profile
    from codealign_ros.train.stages import translator_settings

    share, state = translator_settings(MINI)
    assert 0.0 <= share <= 1.0 and state.relative == (MINI["train"]["translator_balance"]
                                                       == "change")
    share, state = translator_settings(Profile("x", {"train": {"translator_balance": "loss",
                                                               "translator_c2c_share": 0.0}}))
    assert share == 0.0 and not state.relative
    for bad in ({"translator_balance": "Change"}, {"translator_c2c_share": 1.5}):
        with pytest.raises(ConfigError, match="translator_"):
            translator_settings(Profile("x", {"train": bad}))


def test_code_ce_loss() -> None:
    idx = torch.randint(0, D, (2, 5, 5))
    good = torch.nn.functional.one_hot(idx, D).permute(0, 3, 1, 2).float() * 20
    assert float(code_ce_loss(good, idx)) < 1e-6
    bad = torch.zeros_like(good)
    assert float(code_ce_loss(bad, idx)) == pytest.approx(np.log(D), rel=1e-5)
    mixed = good.clone().requires_grad_(True)
    with torch.no_grad():
        mixed[:, :, 0] = 0.0
    mask = torch.ones(2, 1, 5, 5)
    mask[:, :, 0] = 0
    assert float(code_ce_loss(mixed, idx, mask).detach()) < 1e-6
    code_ce_loss(mixed, idx).backward()
    assert mixed.grad is not None and mixed.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        code_ce_loss(good, idx + D)
    with pytest.raises(ValueError):
        code_ce_loss(good, idx[:, :4])


def test_uct_mlp_head_trains_keeps_switching_cost_and_bad_head_raises() -> None:
    torch.manual_seed(0)
    lin = UnifiedCodeTranslator(8, {"a": 16, "b": 4}, hidden=16)
    mlp = UnifiedCodeTranslator(8, {"a": 16, "b": 4}, hidden=16, head="mlp")
    assert mlp.trainable_parameters() == lin.trainable_parameters() + 16 * 16 + 16
    assert mlp.switching_parameters("a") == lin.switching_parameters("a") == 16
    x = torch.randn(1, 8, 5, 5)
    mlp(x, "a").sum().backward()
    assert mlp.mid.weight.grad is not None and mlp.mid.weight.grad.abs().sum() > 0
    assert mlp(x, "b").shape == (1, 4, 5, 5)
    with pytest.raises(ValueError, match="head"):
        UnifiedCodeTranslator(8, {"a": 16}, head="deep")


def test_translator_options_read_the_profile_and_reject_unknown() -> None:
    from codealign_ros.config import ConfigError
    from codealign_ros.config.profiles import Profile
    from codealign_ros.train.stages import translator_options
    mini = translator_options(MINI)
    assert (mini["head"], mini["gate"]) == (MINI["train"].get("translator_head", "linear"),
                                            MINI["train"].get("translator_gate", "stem"))
    assert mini["hidden"] == MINI["train"].get("translator_hidden", MINI.channels)
    x = {"channels": 32}
    assert translator_options(Profile("x", {**x, "train": {"translator_head": "mlp"}})) == {
        "head": "mlp", "gate": "stem", "layer_scale": 1e-6, "hidden": 32}
    assert translator_options(Profile("x", {**x, "train": {
        "translator_gate": "blocks", "translator_layer_scale": 0.1, "translator_hidden": 64}})) == {
        "head": "linear", "gate": "blocks", "layer_scale": 0.1, "hidden": 64}
    with pytest.raises(ConfigError, match="translator_head"):
        translator_options(Profile("x", {**x, "train": {"translator_head": "deep"}}))
    with pytest.raises(ConfigError, match="translator_gate"):
        translator_options(Profile("x", {**x, "train": {"translator_gate": "everywhere"}}))
    with pytest.raises(ConfigError, match="translator_layer_scale"):
        translator_options(Profile("x", {**x, "train": {"translator_layer_scale": 0}}))
    with pytest.raises(ConfigError, match="translator_hidden"):
        translator_options(Profile("x", {**x, "train": {"translator_hidden": 2.5}}))


def test_uct_gate_before_every_block_switches_targets_at_the_same_cost() -> None:
    """gate="blocks" modulates every ConvNeXt block's input: same parameters, different
    function (the stem-only gate leaves the blocks target-blind)."""
    torch.manual_seed(0)
    stem = UnifiedCodeTranslator(8, {"a": 16, "b": 16}, hidden=16, layer_scale=1.0)
    blocks = UnifiedCodeTranslator(8, {"a": 16, "b": 16}, hidden=16, layer_scale=1.0,
                                   gate="blocks")
    blocks.load_state_dict(stem.state_dict())
    assert blocks.trainable_parameters() == stem.trainable_parameters()
    assert blocks.switching_parameters("a") == stem.switching_parameters("a") == 16
    x = torch.randn(1, 8, 5, 5)
    assert not torch.allclose(blocks(x, "a"), stem(x, "a"), atol=1e-5)
    assert not torch.allclose(blocks(x, "a"), blocks(x, "b"), atol=1e-5)
    with torch.no_grad():  # no modulation at all: both reduce to the plain trunk
        g = torch.ones(1, 16, 1, 1)
        assert torch.allclose(stem.trunk(x), blocks.trunk(x, g, every_block=True), atol=1e-6)
    with pytest.raises(ValueError, match="gate"):
        UnifiedCodeTranslator(8, {"a": 16}, gate="everywhere")


def test_store_rebuilds_the_translator_shape_from_its_meta(tmp_path: Path) -> None:
    """A UCT saved with a non-default width, head and gate loads back as the same function."""
    from codealign_ros.models.store import ModelStore, save_component
    torch.manual_seed(0)
    targets = {"g1": 16, "g3": 16}
    uct = UnifiedCodeTranslator(MINI.channels, targets, hidden=16, head="mlp", gate="blocks",
                                layer_scale=0.5)
    save_component(tmp_path / "uct_g2.pt", "translator", {"translator": uct.state_dict()},
                   {"targets": targets, "hidden": uct.hidden, "variant": "uct",
                    "head": uct.head, "gate": uct.gate_at})
    loaded = ModelStore(tmp_path, MINI).translator("g2")
    assert (loaded.hidden, loaded.head, loaded.gate_at) == (16, "mlp", "blocks")
    x = torch.randn(1, MINI.channels, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x, "g3"), uct.eval()(x, "g3"))
