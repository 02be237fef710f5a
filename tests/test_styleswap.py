"""The StyleSwap generator against its spec (generators-spec.md, D.2): shapes and parameter
counts of the published configurations (on the meta device: no memory, no time), the output's
range, the mask branch and the attribute-feature masking on constructed masks."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from livswap.engine.models.styleswap import StyleSwapConfig, StyleSwapGenerator


def _expected_parameters(cfg: StyleSwapConfig) -> int:
    """The parameter count the spec's layer list implies, counted layer by layer."""
    style, c = cfg.style_dim, cfg.channels
    res = cfg.resolutions

    def mod_conv(cin: int, cout: int, k: int) -> int:  # weight + A(w) (weights and biases)
        return cout * cin * k * k + style * cin + cin

    def styled(cin: int, cout: int) -> int:  # + alpha + the activation's bias on 2*cout
        return mod_conv(cin, cout, 3) + 1 + 2 * cout

    total = cfg.identity_dim * style + style + cfg.n_mlp * (style * style + style)
    total += 3 * c(res[-1]) + c(res[-1])  # encoder 1x1 at full size
    total += sum(c(2 * r) * c(r) * 9 + c(r) for r in res[:-1])  # stride-2 3x3 steps
    total += c(4) * 16 + styled(c(4), c(4)) + mod_conv(2 * c(4), 3, 1) + 3
    for r in res[1:]:
        total += styled(2 * c(r // 2), c(r)) + styled(2 * c(r), c(r))
        total += mod_conv(2 * c(r), 3, 1) + 3
    if cfg.mask:
        total += sum(mod_conv(2 * c(r), 1, 1) for r in res)
    return total


@pytest.mark.parametrize(("size", "mask", "millions"), [(256, True, 18.33), (512, False, 67.07)])
def test_the_published_configurations_have_the_specs_shapes(
    size: int, mask: bool, millions: float
) -> None:
    cfg = StyleSwapConfig.for_resolution(size)  # type: ignore[arg-type]
    assert cfg.mask is mask
    with torch.device("meta"):
        model = StyleSwapGenerator(cfg)
        out = model.swap(torch.zeros(2, 3, size, size), torch.zeros(2, 512))
    count = sum(p.numel() for p in model.parameters())
    assert count == _expected_parameters(cfg)
    assert abs(count / 1e6 - millions) < 0.01
    assert out.image.shape == (2, 3, size, size)
    assert (out.mask is not None) is mask
    levels = len(cfg.resolutions)
    assert len(out.masks) == (levels if mask else 0)
    if mask:
        assert [m.shape[-1] for m in out.masks] == cfg.resolutions
    # Channels as the spec gives them: 512*narrow up to 32, halving per doubling after 64.
    assert [cfg.channels(r) for r in cfg.resolutions] == (
        [256, 256, 256, 256, 128, 64, 32]
        if size == 256
        else [512, 512, 512, 512, 512, 256, 128, 64]
    )
    # The mapping network is slow-learning (lr_mul 0.01) and every styled conv concatenates.
    first: Any = model.mapping[0]
    up: Any = model.convs[0]
    assert first.lr_mul == 0.01 and len(model.mapping) == 8
    assert up.act.bias.shape[0] == 2 * cfg.channels(8)


def _tiny(size: int = 256, mask: bool = True) -> StyleSwapGenerator:
    torch.manual_seed(0)
    return StyleSwapGenerator(StyleSwapConfig(size=size, narrow=1 / 64, mask=mask, style_dim=64))


def test_output_is_finite_and_in_about_the_image_range() -> None:
    model = _tiny(64)
    target = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out = model.swap(target, torch.randn(2, 512))
    assert torch.isfinite(out.image).all()
    assert out.image.abs().max() < 10
    assert out.mask is not None and ((out.mask > 0) & (out.mask < 1)).all()
    # Every level's mask went through a sigmoid.
    assert all(((m > 0) & (m < 1)).all() for m in out.masks)
    with pytest.raises(ValueError, match="expected 64x64 crops"):
        model.swap(torch.zeros(1, 3, 32, 32), torch.zeros(1, 512))


def _force_last_mask(model: StyleSwapGenerator, logit: torch.Tensor) -> Any:
    """Replace the pre-sigmoid output of the last mask level."""
    return model.to_masks[-1].register_forward_hook(lambda m, args, out: logit.expand_as(out))


def test_the_output_is_the_target_where_the_mask_is_off_and_the_swap_where_on() -> None:
    model = _tiny(64)
    target = torch.rand(1, 3, 64, 64) * 2 - 1
    identity = torch.randn(1, 512)
    logit = torch.full((1, 1, 64, 64), -40.0)
    logit[..., :, 32:] = 40.0  # right half: the swapped face
    handle = _force_last_mask(model, logit)
    with torch.no_grad():
        out = model.swap(target, identity)
    handle.remove()
    assert torch.allclose(out.image[..., :32], target[..., :32], atol=1e-6)
    assert not torch.allclose(out.image[..., 32:], target[..., 32:], atol=1e-2)
    # Without the mask branch (the 512 configuration) the output is the decoder's own.
    plain = _tiny(64, mask=False)
    with torch.no_grad():
        assert plain.swap(target, identity).mask is None


def test_target_features_are_flattened_inside_the_mask_at_256_and_above() -> None:
    model = _tiny(256)
    target = torch.rand(1, 3, 256, 256) * 2 - 1
    # The 128 level's mask decides the 256 level's feature masking: left half inside.
    logit = torch.full((1, 1, 128, 128), -40.0)
    logit[..., :, :64] = 40.0
    hook = model.to_masks[-2].register_forward_hook(lambda m, args, out: logit)
    seen: dict[int, torch.Tensor] = {}

    def capture(index: int) -> Any:
        def pre(module: Any, args: tuple[torch.Tensor, ...]) -> None:
            seen[index] = args[2]

        return pre

    handles = [conv.register_forward_pre_hook(capture(i)) for i, conv in enumerate(model.convs)]
    with torch.no_grad():
        model.swap(target, torch.randn(1, 512))
        original = model.encode(target)  # full size first
    hook.remove()
    for handle in handles:
        handle.remove()
    at_256 = seen[len(model.convs) - 1]
    full = original[0]
    inside, outside = at_256[..., :128], at_256[..., 128:]
    assert torch.allclose(outside, full[..., 128:], atol=1e-6)  # the target's own detail
    mean = full[..., :128].mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(inside, mean.expand_as(inside), atol=1e-5)  # flattened to the mean
    # Below 256 nothing is masked: the 128 level sees the encoder's map as it is.
    at_128 = seen[len(model.convs) - 3]
    assert torch.allclose(at_128, original[1], atol=1e-6)


def test_gradients_reach_every_parameter() -> None:
    """The attribute features' alpha starts at 0, so the encoder gets gradient only through
    it; all the same every parameter must be connected to the output."""
    model = _tiny(32)
    with torch.no_grad():
        for conv in [*model.convs, model.conv1]:
            conv.feature_weight.fill_(0.1)  # type: ignore[operator]
    out = model.swap(torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, 512))
    assert out.mask is not None
    (out.image.square().mean() + out.mask.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing


def test_style_mixing_takes_each_level_from_the_identity_its_weight_names() -> None:
    model = _tiny(32)
    target = torch.rand(1, 3, 32, 32) * 2 - 1
    a, b = torch.randn(1, 512), torch.randn(1, 512)
    levels = len(model.config.resolutions)
    with torch.no_grad():
        only_a = model(target, a)
        only_b = model(target, b)
        assert torch.allclose(
            model.swap(target, a, mix=b, mix_weights=(0.0,) * levels).image, only_a
        )
        assert torch.allclose(
            model.swap(target, a, mix=b, mix_weights=(1.0,) * levels).image, only_b, atol=1e-6
        )
        coarse_a_fine_b = model.swap(target, a, mix=b, mix_weights=(0, 0, 1, 1)).image
    assert not torch.allclose(coarse_a_fine_b, only_a, atol=1e-4)
    assert not torch.allclose(coarse_a_fine_b, only_b, atol=1e-4)
