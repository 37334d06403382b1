"""image_exps.models: output shapes, CIFAR stems, WRN sizes, pretrained weights from the
torch hub cache (offline error and cached success)."""

from __future__ import annotations

import os
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from image_exps.models import MODELS, ModelError, WideResNet, build_image_model

RESNET18_FILE = os.path.basename(torchvision.models.ResNet18_Weights.DEFAULT.url)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, in_channels, image_size, batch",
    [
        ("cnn", 1, 8, 3),
        ("cnn", 3, 32, 2),
        ("resnet18", 3, 32, 2),
        ("resnet34", 1, 16, 2),
        ("resnet50", 3, 16, 2),
        ("vgg11_bn", 3, 32, 2),
        ("vit_b_16", 3, 32, 2),
        ("wrn16_2", 3, 32, 2),
        ("wrn16_8", 3, 16, 2),
        ("wrn28_10", 1, 16, 2),
        ("resnet20", 3, 32, 2),
        ("resnet32", 1, 8, 2),
        ("resnet44", 3, 16, 2),
        ("resnet56", 3, 32, 1),
    ],
)
def test_forward_shapes(name, in_channels, image_size, batch):
    torch.manual_seed(0)
    model = build_image_model(name, 7, in_channels=in_channels, image_size=image_size)
    x = torch.randn(batch, in_channels, image_size, image_size)
    with torch.no_grad():
        assert model(x).shape == (batch, 7)


def test_every_model_is_tested():
    assert set(MODELS) == {
        "cnn", "resnet18", "resnet34", "resnet50", "vgg11_bn", "vit_b_16", "wrn16_2", "wrn16_8",
        "wrn28_10", "resnet20", "resnet32", "resnet44", "resnet56",
    }  # fmt: skip


def test_cnn_has_no_batchnorm_or_dropout_by_default():
    model = build_image_model("cnn", 10, in_channels=1)
    kinds = {type(m) for m in model.modules()}
    assert not any(issubclass(k, (nn.modules.batchnorm._BatchNorm, nn.Dropout)) for k in kinds)
    assert any(
        isinstance(m, nn.Dropout) for m in build_image_model("cnn", 10, dropout=0.2).modules()
    )


def test_resnet_stem_depends_on_image_size():
    small = build_image_model("resnet18", 10, image_size=32)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    big = build_image_model("resnet18", 10, in_channels=1, image_size=224)
    assert big.conv1.kernel_size == (7, 7) and big.conv1.in_channels == 1
    assert isinstance(big.maxpool, nn.MaxPool2d)
    with torch.no_grad():
        assert big(torch.randn(1, 1, 64, 64)).shape == (1, 10)
    vgg = build_image_model("vgg11_bn", 10, image_size=32)
    assert vgg.classifier[-1].in_features == 512  # CIFAR head, not 25088 -> 4096 -> 4096
    assert all(p.device.type == "cpu" for p in vgg.parameters())
    assert all(torch.isfinite(b).all() for b in vgg.buffers())
    assert float(vgg.features[1].running_var.min()) == 1.0  # BN statistics initialised
    with torch.device("meta"):  # structure only: the ImageNet classifier is big
        big_vgg = build_image_model("vgg11_bn", 10, image_size=96)
    assert big_vgg.classifier[-1].in_features == 4096


def test_dropout_is_wired():
    res = build_image_model("resnet18", 10, dropout=0.3)
    assert isinstance(res.fc[0], nn.Dropout) and res.fc[0].p == 0.3
    wrn = build_image_model("wrn16_8", 10, dropout=0.3)
    assert sum(isinstance(m, nn.Dropout) for m in wrn.modules()) == 6


def test_wide_resnet_parameter_counts():
    with torch.device("meta"):  # shapes only
        wrn16_2, wrn16_8, wrn28_10 = (
            build_image_model(n, 10) for n in ("wrn16_2", "wrn16_8", "wrn28_10")
        )
    assert n_params(wrn16_2) == pytest.approx(0.69e6, rel=0.01)  # Zagoruyko & Komodakis: 0.7M
    assert n_params(wrn16_8) == pytest.approx(11.0e6, rel=0.01)
    assert n_params(wrn28_10) == pytest.approx(36.5e6, rel=0.01)
    with pytest.raises(ModelError, match="6n"):
        WideResNet(20, 2, 10)


def test_cifar_resnets_have_he_et_al_sizes_and_parameter_free_shortcuts():
    with torch.device("meta"):
        sizes = {
            n: n_params(build_image_model(n, 10)) for n in ("resnet20", "resnet32", "resnet56")
        }
    # He et al. (2016), Table 6: 0.27M, 0.46M, 0.85M parameters
    assert sizes["resnet20"] == 269_722  # 0.27M, as the public CIFAR-10 checkpoint holds
    assert sizes["resnet32"] == pytest.approx(0.46e6, rel=0.01)
    assert sizes["resnet56"] == pytest.approx(0.85e6, rel=0.01)
    model = build_image_model("resnet20", 10)
    assert list(model.layer2[0].shortcut.parameters()) == []
    x = torch.randn(2, 16, 8, 8)
    out = model.layer2[0].shortcut(x)  # option A: subsampled, new channels zero
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2]) and not out[:, :8].any()
    assert not out[:, 24:].any()
    assert build_image_model("resnet20", 10, dropout=0.2).dropout.p == 0.2
    assert "linear.weight" in model.state_dict()  # the public checkpoints' head name


def test_unknown_name_and_bad_options():
    with pytest.raises(ModelError, match="Did you mean 'resnet18'") as info:
        build_image_model("resnet19", 10)
    assert all(name in str(info.value) for name in MODELS)
    with pytest.raises(ModelError, match="No pretrained weights for 'wrn28_10'"):
        build_image_model("wrn28_10", 10, pretrained=True)
    with pytest.raises(ModelError, match="divisible by 16"):
        build_image_model("vit_b_16", 10, image_size=40)
    with pytest.raises(ModelError, match="image_size=224"):
        build_image_model("vit_b_16", 10, image_size=32, pretrained=True)


# --------------------------------------------------------------------------- pretrained


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub directory; downloads fail at once, as offline, and are recorded."""
    calls: list[str] = []

    def offline(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub", calls
    torch.hub.set_dir(old)


def test_pretrained_offline_names_expected_file(hub_dir):
    hub, calls = hub_dir
    with pytest.raises(ModelError) as info:
        build_image_model("resnet18", 5, image_size=224, pretrained=True)
    msg = str(info.value)
    assert str(hub / "checkpoints" / RESNET18_FILE) in msg
    assert torchvision.models.ResNet18_Weights.DEFAULT.url in msg
    assert calls == [torchvision.models.ResNet18_Weights.DEFAULT.url]
    assert info.value.__cause__ is None


def test_pretrained_from_cache(hub_dir):
    hub, calls = hub_dir
    torch.manual_seed(123)
    reference = torchvision.models.resnet18().state_dict()  # random, not ImageNet, weights
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(reference, hub / "checkpoints" / RESNET18_FILE)

    model = build_image_model("resnet18", 5, image_size=32, pretrained=True)
    assert not calls
    state = model.state_dict()
    for key, value in reference.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    assert model.conv1.kernel_size == (7, 7)  # pretrained keeps the ImageNet stem
    assert model.fc.out_features == 5 and state["fc.weight"].shape == (5, 512)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)

    gray = build_image_model("resnet18", 5, in_channels=1, image_size=224, pretrained=True)
    torch.testing.assert_close(gray.conv1.weight, reference["conv1.weight"].sum(1, keepdim=True))


def test_pretrained_corrupt_cache_file(hub_dir):
    hub, _ = hub_dir
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / RESNET18_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="corrupt or incomplete: delete it"):
        build_image_model("resnet18", 5, pretrained=True)
