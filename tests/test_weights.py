"""model.weights: initial weights from a local state dict or checkpoint, verified when read,
with one clear message for every file that does not fit."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from torch import nn

from common.errors import ModelError
from common.weights import head_keys, load_initial_weights
from image_exps.models import build_image_model


class Unsafe:
    """Not on torch's weights_only allow-list: loading it would run arbitrary code."""


def cnn(classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_image_model("cnn", classes, in_channels=1, image_size=8)


def same(a: nn.Module, b: nn.Module, skip: set[str] = frozenset()) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if k not in skip)


def test_a_state_dict_round_trips(tmp_path):
    source, target = cnn(seed=1), cnn(seed=2)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    assert not same(source, target)
    loaded = load_initial_weights(target, tmp_path / "w.pt")
    assert same(source, target)
    assert loaded["sha256"] == hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()
    assert loaded["fresh_head"] == []


@pytest.mark.parametrize("wrap", ["model", "state_dict", "model_state_dict", "ddp"])
def test_checkpoints_holding_a_state_dict(tmp_path, wrap):
    source, target = cnn(seed=1), cnn(seed=2)
    state = source.state_dict()
    if wrap == "ddp":
        saved = {f"module.{k}": v for k, v in state.items()}
    else:
        saved = {wrap: state, "step": 7, "history": [{"epoch": 1}]}
    torch.save(saved, tmp_path / "ckpt.pt")
    load_initial_weights(target, tmp_path / "ckpt.pt")
    assert same(source, target)


def test_another_number_of_classes_needs_replace_head(tmp_path):
    torch.save(cnn(classes=5, seed=1).state_dict(), tmp_path / "w.pt")
    target = cnn(classes=10, seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ModelError, match=r"set model\.replace_head=true"):
        load_initial_weights(target, tmp_path / "w.pt")
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # untouched
    loaded = load_initial_weights(target, tmp_path / "w.pt", replace_head=True)
    head = head_keys(target)
    assert sorted(loaded["fresh_head"]) == sorted(head)
    assert same(cnn(classes=5, seed=1), target, skip=head)  # the body is the file's
    assert all(torch.equal(before[k], target.state_dict()[k]) for k in head)  # head fresh


def test_a_pre_1_6_checkpoint_without_batch_counters_loads(tmp_path):
    """Published checkpoints (e.g. the CIFAR ResNets') are often in torch.save's old,
    non-zip format, under "state_dict" with DataParallel's prefix, and lack BatchNorm's
    num_batches_tracked; before, the zip check called them damaged."""
    torch.manual_seed(3)
    source = build_image_model("resnet20", 10)
    state = {f"module.{k}": v for k, v in source.state_dict().items() if "num_batches" not in k}
    path = tmp_path / "old.th"
    torch.save(
        {"state_dict": state, "best_prec1": 91.0}, path, _use_new_zipfile_serialization=False
    )
    assert path.read_bytes()[:2] == b"\x80\x02"  # the legacy pickle, not a zip
    torch.manual_seed(4)
    target = build_image_model("resnet20", 10)
    target.bn1.num_batches_tracked.fill_(7)
    load_initial_weights(target, path)
    assert same(source, target, skip={k for k in state if "num_batches" in k})
    assert int(target.bn1.num_batches_tracked) == 0  # as BatchNorm starts an old file's
    cut = tmp_path / "cut.th"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ModelError, match=r"model\.weights: cannot read checkpoint"):
        load_initial_weights(target, cut)


def test_another_architecture_is_named(tmp_path):
    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelError, match=r"another architecture.*missing .*unexpected"):
        load_initial_weights(cnn(), tmp_path / "w.pt")


def test_replace_head_is_fresh_even_for_as_many_classes(tmp_path):
    """Transfer from CIFAR-10's ten classes to another set's ten: the file's head belongs
    to the old classes, so replace_head keeps the model's own (before: the file's)."""
    source, target = cnn(seed=1), cnn(seed=2)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    head = head_keys(target)
    own = {k: v.clone() for k, v in target.state_dict().items() if k in head}
    loaded = load_initial_weights(target, tmp_path / "w.pt", replace_head=True)
    assert sorted(loaded["fresh_head"]) == sorted(head)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in own.items())
    assert same(source, target, skip=head)


def test_a_body_of_another_size_is_refused_even_with_replace_head(tmp_path):
    state = cnn().state_dict()
    first = next(k for k in state if k not in head_keys(cnn()))
    state[first] = torch.zeros(*state[first].shape[:-1], state[first].shape[-1] + 1)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ModelError, match="another architecture or size"):
        load_initial_weights(cnn(), tmp_path / "w.pt", replace_head=True)


def test_the_hash_in_a_hub_style_name_is_checked(tmp_path):
    torch.save(cnn(seed=1).state_dict(), tmp_path / "w.pt")
    digest = hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()
    good = tmp_path / f"cnn-{digest[:8]}.pth"
    shutil.copy(tmp_path / "w.pt", good)
    load_initial_weights(cnn(), good)
    bad = tmp_path / f"cnn-{'0' * 8 if digest[0] != '0' else '1' * 8}.pth"
    shutil.copy(tmp_path / "w.pt", bad)
    with pytest.raises(ModelError, match="damaged; fetch it again"):
        load_initial_weights(cnn(), bad)


def test_damaged_missing_and_unsafe_files(tmp_path):
    torch.save(cnn().state_dict(), tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="damaged"):
        load_initial_weights(cnn(), tmp_path / "cut.pt")
    with pytest.raises(ModelError, match="does not exist"):
        load_initial_weights(cnn(), tmp_path / "nothing.pt")
    with pytest.raises(ModelError, match="is not a regular file"):
        load_initial_weights(cnn(), tmp_path)
    torch.save({"model": "not tensors"}, tmp_path / "odd.pt")
    with pytest.raises(ModelError, match="is not a state dict"):
        load_initial_weights(cnn(), tmp_path / "odd.pt")
    torch.save({}, tmp_path / "empty.pt")
    with pytest.raises(ModelError, match="holds no state dict"):
        load_initial_weights(cnn(), tmp_path / "empty.pt")
    # a pickled object that would run code: weights_only refuses it
    torch.save({"model": {"w": torch.zeros(1)}, "x": Unsafe()}, tmp_path / "p.pt")
    with pytest.raises(ModelError, match=r"model\.weights"):
        load_initial_weights(cnn(), tmp_path / "p.pt")


def test_fine_tuning_from_a_finished_run_through_the_command(tmp_path, capsys):
    from common.train.cli import train_main
    from image_exps.task import TASK

    def main(argv):
        return train_main(TASK, argv)

    base = ["--config", "image_exps/configs/digits.yaml", "smoke=true", "train.progress=false"]
    assert main([*base, f"run_dir={tmp_path / 'first'}", "data.root=" + str(tmp_path)]) == 0
    best = tmp_path / "first" / "best.pt"
    second = tmp_path / "second"
    args = [*base, f"run_dir={second}", f"model.weights={best}", "data.root=" + str(tmp_path)]
    assert main(args) == 0
    assert f"initial weights from {best}" in capsys.readouterr().out
    capsys.readouterr()
    bad = [*base, f"run_dir={tmp_path / 'third'}", f"model.weights={tmp_path / 'none.pt'}"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
