"""Multi-view NYU classifiers: parameter counts, weight sharing, heads, noise, predict, transfer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.networks.multiview import (
    TARGETS,
    VIEWS,
    BreastWiseModel,
    GaussianNoise,
    ImageWiseModel,
    JointModel,
    MultiViewModel,
    ViewWiseModel,
    build_multiview,
    target_names,
    transfer_columns,
)
from monai_mammo.networks.resnet22 import ResNet22

SIZE = (64, 56)  # small inputs keep the tests fast (feature maps 1 x 1)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make_views(channels: int = 1, batch: int = 2, seed: int = 0, views=VIEWS) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {v: torch.randn(batch, channels, *SIZE, generator=gen) for v in views}


def head_size(width: int, rows: int, classes: int = 2) -> int:
    return width * width + width + width * rows * classes + rows * classes


COLUMN = {1: 2_799_536, 3: 2_801_104}


@pytest.mark.parametrize(
    "variant, in_channels, expected",
    [
        ("view", 1, 6_132_592),
        ("view", 3, 6_135_728),
        ("image", 1, 5_870_464),
        ("image", 3, 5_873_600),
        # not stated in the paper: two shared columns + the heads described in the module docstring
        ("breast", 1, 2 * COLUMN[1] + 2 * head_size(512, 2)),
        ("breast", 3, 2 * COLUMN[3] + 2 * head_size(512, 2)),
        ("joint", 1, 2 * COLUMN[1] + head_size(1024, 4)),
        ("joint", 3, 2 * COLUMN[3] + head_size(1024, 4)),
    ],
)
def test_parameter_counts(variant: str, in_channels: int, expected: int) -> None:
    assert n_params(build_multiview(variant, in_channels=in_channels)) == expected


def test_build_multiview_names_and_errors() -> None:
    assert type(build_multiview()) is ViewWiseModel
    assert type(build_multiview("Image-Wise")) is ImageWiseModel
    assert type(build_multiview("breast_wise")) is BreastWiseModel
    assert type(build_multiview("joint")) is JointModel
    with pytest.raises(MammoConfigError, match="unknown multi-view variant 'side'"):
        build_multiview("side")
    with pytest.raises(MammoConfigError, match="num_classes"):
        build_multiview("view", num_classes=1)
    with pytest.raises(MammoConfigError, match="num_targets"):
        build_multiview("view", num_targets=0)
    with pytest.raises(MammoConfigError, match="std"):
        build_multiview("view", noise_std=-1.0)


def test_head_targets_and_views_per_variant() -> None:
    rows = [0, 1, 2, 3]
    assert ViewWiseModel().head_targets == {"CC": rows, "MLO": rows}
    assert ViewWiseModel().head_views == {"CC": ("L-CC", "R-CC"), "MLO": ("L-MLO", "R-MLO")}
    assert ImageWiseModel().head_targets == {"L-CC": [0, 2], "R-CC": [1, 3], "L-MLO": [0, 2], "R-MLO": [1, 3]}
    assert BreastWiseModel().head_targets == {"L": [0, 2], "R": [1, 3]}
    assert BreastWiseModel().head_views == {"L": ("L-CC", "L-MLO"), "R": ("R-CC", "R-MLO")}
    assert JointModel().head_views == {"joint": VIEWS}
    assert [TARGETS[i] for i in ImageWiseModel().head_targets["R-MLO"]] == ["right_benign", "right_malignant"]
    # exam-level targets (BI-RADS) are covered by every head
    assert target_names(1) == ("target_0",)
    assert ImageWiseModel(num_targets=1, num_classes=3).head_targets == {v: [0] for v in VIEWS}


def test_columns_are_shared_between_sides() -> None:
    model = ViewWiseModel()
    columns = model.columns()
    assert list(columns) == list(VIEWS)
    assert columns["L-CC"] is columns["R-CC"] and columns["L-MLO"] is columns["R-MLO"]
    assert columns["L-CC"] is not columns["L-MLO"]
    assert all(isinstance(c, ResNet22) for c in columns.values())
    calls = {"CC": 0, "MLO": 0}
    for angle in calls:
        model.column[angle].register_forward_hook(lambda *_, a=angle: calls.__setitem__(a, calls[a] + 1))
    model.eval()(make_views())
    assert calls == {"CC": 2, "MLO": 2}


def test_gradients_reach_the_shared_column_from_both_views() -> None:
    torch.manual_seed(0)
    model = ViewWiseModel(noise_std=0.0).eval()  # eval: BN statistics fixed, so views are independent
    views = make_views(seed=1)
    for x in views.values():
        x.requires_grad_(True)
    model(views)["CC"].sum().backward()
    weight = model.column["CC"].conv.weight
    total = weight.grad.clone()
    assert views["L-CC"].grad.abs().sum() > 0 and views["R-CC"].grad.abs().sum() > 0
    assert model.column["MLO"].conv.weight.grad is None  # the MLO head was not in the loss

    column, head = model.column["CC"], model.heads["CC"]
    per_view = []
    for keep in ("L-CC", "R-CC"):
        weight.grad = None
        vectors = [column(views[v]) if v == keep else column(views[v]).detach() for v in ("L-CC", "R-CC")]
        head(torch.cat(vectors, dim=1)).sum().backward()
        per_view.append(weight.grad.clone())
    assert per_view[0].abs().sum() > 0 and per_view[1].abs().sum() > 0
    torch.testing.assert_close(total, per_view[0] + per_view[1])


@pytest.mark.parametrize("variant", ["view", "image", "breast", "joint"])
def test_outputs_are_log_probabilities(variant: str) -> None:
    torch.manual_seed(0)
    model = build_multiview(variant, in_channels=3).eval()
    outputs = model(make_views(channels=3, batch=3))
    assert set(outputs) == set(model.head_targets)
    for head, log_probs in outputs.items():
        assert log_probs.shape == (3, len(model.head_targets[head]), 2)
        torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, len(model.head_targets[head])))
    assert model.predict(outputs).shape == (3, 4)
    assert not model.predict(outputs).isnan().any()


def test_birads_model_outputs_three_classes() -> None:
    model = ViewWiseModel(num_targets=1, num_classes=3).eval()
    outputs = model(make_views())
    assert outputs["CC"].shape == outputs["MLO"].shape == (2, 1, 3)
    expected = (outputs["CC"][:, 0, 1].exp() + outputs["MLO"][:, 0, 1].exp()) / 2
    torch.testing.assert_close(model.predict(outputs)[:, 0], expected)


def test_image_wise_heads_use_the_first_rows_of_a_full_output_layer() -> None:
    torch.manual_seed(0)
    model = ImageWiseModel().eval()
    head = model.heads["R-CC"]
    assert (head.output.in_features, head.output.out_features) == (256, 8)
    features = torch.randn(2, 256)
    logits = head.output(torch.relu(head.fc1(features))).view(2, 4, 2)
    torch.testing.assert_close(head(features), torch.log_softmax(logits[:, :2], dim=-1))


def test_noise_only_in_training_mode() -> None:
    torch.manual_seed(0)
    views = make_views(seed=2)
    model = ViewWiseModel()
    model.train()
    first, second = model(views)["CC"], model(views)["CC"]
    assert not torch.equal(first, second)
    model.eval()
    assert torch.equal(model(views)["CC"], model(views)["CC"])
    quiet = ViewWiseModel(noise_std=0.0).train()
    assert torch.equal(quiet(views)["CC"], quiet(views)["CC"])  # train-mode differences came from noise

    noise = GaussianNoise(0.01).train()
    x = torch.zeros(200_000)
    delta = noise(x) - x
    assert abs(delta.std().item() - 0.01) < 2e-4 and abs(delta.mean().item()) < 2e-4
    assert torch.equal(noise.eval()(x), x)


def test_predict_averages_the_heads_covering_each_target() -> None:
    model = ViewWiseModel()
    p_cc = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    p_mlo = torch.tensor([[0.3, 0.4, 0.5, 0.6], [0.9, 0.2, 0.1, 0.0]])

    def as_log_probs(p: torch.Tensor) -> torch.Tensor:
        return torch.stack([1 - p, p], dim=-1).log()

    got = model.predict({"CC": as_log_probs(p_cc), "MLO": as_log_probs(p_mlo)})
    torch.testing.assert_close(got, (p_cc + p_mlo) / 2)
    torch.testing.assert_close(model.predict({"MLO": as_log_probs(p_mlo)}), p_mlo)

    image = ImageWiseModel()
    left_cc = as_log_probs(torch.tensor([[0.2, 0.6]]))  # rows: left_benign, left_malignant
    left_mlo = as_log_probs(torch.tensor([[0.4, 0.8]]))
    got = image.predict({"L-CC": left_cc, "L-MLO": left_mlo})
    assert got[0, 0].item() == pytest.approx(0.3) and got[0, 2].item() == pytest.approx(0.7)
    assert math.isnan(got[0, 1].item()) and math.isnan(got[0, 3].item())

    with pytest.raises(MammoDataError, match="unexpected head output"):
        model.predict({"L-CC": left_cc})
    with pytest.raises(MammoDataError, match="unexpected head output"):
        model.predict({"CC": left_cc})
    with pytest.raises(MammoDataError, match="no head outputs"):
        model.predict({})


def test_image_wise_model_with_missing_views() -> None:
    torch.manual_seed(0)
    model = ImageWiseModel().eval()
    views = make_views(seed=3)
    full = model(views)
    partial = model({v: views[v] for v in ("R-CC", "L-MLO")})
    assert set(partial) == {"R-CC", "L-MLO"}
    torch.testing.assert_close(partial["R-CC"], full["R-CC"])
    probs = model.predict(partial)
    assert not probs.isnan().any()  # R-CC covers the right breast, L-MLO the left one
    torch.testing.assert_close(probs[:, [1, 3]], partial["R-CC"][:, :, 1].exp())
    only_left = model.predict(model(make_views(views=("L-CC",))))
    assert only_left[:, [1, 3]].isnan().all() and not only_left[:, [0, 2]].isnan().any()
    with pytest.raises(MammoDataError, match="at least one of"):
        model({"label": torch.zeros(2, 4)})


def test_missing_or_malformed_views_are_named() -> None:
    model = ViewWiseModel().eval()
    with pytest.raises(MammoDataError, match="missing view\\(s\\) R-CC, R-MLO"):
        model(make_views(views=("L-CC", "L-MLO")))
    with pytest.raises(MammoDataError, match="missing view\\(s\\) L-MLO"):
        BreastWiseModel()(make_views(views=("L-CC", "R-CC", "R-MLO")))
    wrong = make_views()
    wrong["R-MLO"] = torch.zeros(2, 3, *SIZE)
    with pytest.raises(MammoDataError, match="R-MLO: expected a \\(B, 1, H, W\\) tensor"):
        model(wrong)
    extra = make_views()
    extra["label"] = torch.zeros(2, 4)  # other batch keys are ignored
    assert set(model(extra)) == {"CC", "MLO"}
    with pytest.raises(MammoConfigError, match="no head predicts"):
        MultiViewModel({"CC": (("L-CC",), [0])}, num_targets=2)


def test_transfer_columns_from_birads_to_a_heatmap_model() -> None:
    torch.manual_seed(0)
    birads = ViewWiseModel(in_channels=1, num_targets=1, num_classes=3).eval()
    cancer = ViewWiseModel(in_channels=3).eval()
    heads_before = {k: v.clone() for k, v in cancer.heads.state_dict().items()}
    copied = transfer_columns(birads, cancer)

    expected = sorted(f"column.{a}.{k}" for a in ("CC", "MLO") for k in birads.column[a].state_dict())
    assert copied == expected
    for angle in ("CC", "MLO"):
        src, dst = birads.column[angle].state_dict(), cancer.column[angle].state_dict()
        for key, value in src.items():
            if key == "conv.weight":
                assert dst[key].shape == (16, 3, 7, 7)
                for channel in range(3):
                    assert torch.equal(dst[key][:, channel : channel + 1], value)
            else:
                assert torch.equal(dst[key], value)
    for key, value in cancer.heads.state_dict().items():
        assert torch.equal(value, heads_before[key])  # heads are never copied

    # an image with empty heatmap channels gives the BI-RADS column's response
    x = torch.randn(2, 1, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(
            cancer.column["CC"](torch.cat([x, torch.zeros(2, 2, *SIZE)], dim=1)), birads.column["CC"](x)
        )


def test_transfer_columns_between_variants_and_errors() -> None:
    source = ImageWiseModel(in_channels=3)
    target = BreastWiseModel(in_channels=3)
    assert len(transfer_columns(source, target)) == 2 * len(source.column["CC"].state_dict())
    assert torch.equal(target.column["MLO"].conv.weight, source.column["MLO"].conv.weight)

    untouched = ViewWiseModel(in_channels=1)
    before = {k: v.clone() for k, v in untouched.state_dict().items()}
    with pytest.raises(MammoConfigError, match="column.CC.conv.weight"):
        transfer_columns(ViewWiseModel(in_channels=3), untouched)
    assert all(torch.equal(v, before[k]) for k, v in untouched.state_dict().items())
    with pytest.raises(MammoConfigError, match="source must be a MultiViewModel"):
        transfer_columns(ResNet22(), untouched)  # type: ignore[arg-type]
