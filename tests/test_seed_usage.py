"""The call patterns of the original READMEs (../shared/seeds/) run unchanged.

Only the imports differ (``from sam import SAM`` -> ``from common.optim import SAM``), and
the placeholders (YourModel, data, loss_function) are filled in with tiny real ones.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
from conftest import mlp
from torch import nn

from common.bn import disable_running_stats, enable_running_stats
from common.optim import NSO, SAM, WSAM


def YourModel() -> nn.Module:
    return mlp()


def loader(n_batches: int = 3):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g))
        for _ in range(n_batches)
    ]


def loss_function(output, prediction):  # the READMEs call loss_function(target, model(input))
    return nn.functional.cross_entropy(prediction, output)


def changed(model: nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.fixture
def ddp_group():
    """A one-process gloo group, so that ``model.no_sync()`` of the READMEs exists."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_sam_two_step_usage():
    model = YourModel()
    before = [p.detach().clone() for p in model.parameters()]
    base_optimizer = torch.optim.SGD  # define an optimizer for the "sharpness-aware" update
    optimizer = SAM(model.parameters(), base_optimizer, lr=0.1, momentum=0.9)
    for input, output in loader():
        # first forward-backward pass
        enable_running_stats(model)
        loss = loss_function(output, model(input))  # use this loss for any training statistics
        loss.backward()
        optimizer.first_step(zero_grad=True)
        # second forward-backward pass
        disable_running_stats(model)
        loss_function(output, model(input)).backward()  # make sure to do a full forward pass
        optimizer.second_step(zero_grad=True)
    assert changed(model, before) and int(model[1].num_batches_tracked) == 3


def test_sam_closure_usage_and_base_scheduler():
    model = YourModel()
    base_optimizer = torch.optim.SGD
    optimizer = SAM(
        model.parameters(), base_optimizer, rho=2.0, adaptive=True, lr=0.1, momentum=0.9
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer.base_optimizer, T_max=200)
    before = [p.detach().clone() for p in model.parameters()]
    for input, output in loader():

        def closure():
            loss = loss_function(output, model(input))
            loss.backward()
            return loss

        loss = loss_function(output, model(input))
        loss.backward()
        optimizer.step(closure)
        optimizer.zero_grad()
        scheduler.step()
    assert changed(model, before)
    assert optimizer.param_groups[0]["lr"] < 0.1  # the base's schedule is the wrapper's


def test_sam_multi_gpu_no_sync_usage(ddp_group):
    model = nn.parallel.DistributedDataParallel(YourModel())
    optimizer = SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    for input, output in loader():
        # first forward-backward pass
        loss = loss_function(output, model(input))
        with model.no_sync():  # <- this is the important line
            loss.backward()
        optimizer.first_step(zero_grad=True)
        # second forward-backward pass
        loss_function(output, model(input)).backward()
        optimizer.second_step(zero_grad=True)
    assert changed(model, before)


def test_nso_manual_usage():
    class args:
        # NSO parameters
        nso_sigma = 0.01  # standard deviation sigma of the isotropic Gaussian distribution
        num_perturbs = 1  # how many perturbations sampled (k in the algorithm), default: 1
        use_neg = True  # if use two-point estimate, default: True
        nso_lam = 0  # weight of the unperturbed weight loss, default: 0

    config = {"optimizer": {"args": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}}}
    model = YourModel()
    criterion = nn.CrossEntropyLoss()
    base_optimizer = torch.optim.SGD  # define an optimizer for the gradient descent update
    optimizer = NSO(
        model.parameters(),
        base_optimizer,
        sigma=args.nso_sigma,
        **dict(config["optimizer"]["args"]),
    )
    before = [p.detach().clone() for p in model.parameters()]
    for data, target in loader():
        # first forward-backward step: gradients at the original weight (skippable if nso_lam == 0)
        enable_running_stats(model)
        output = model(data)
        loss = criterion(output, target)
        loss.backward()
        optimizer.store_gradients(zero_grad=True, store_weights=True, update_weight=args.nso_lam)
        # second forward-backward step: taking perturbations and computing gradients (main part)
        disable_running_stats(model)
        if args.num_perturbs != 0:
            update_weight = (
                (1 - args.nso_lam) / (2 * args.num_perturbs)
                if args.use_neg
                else (1 - args.nso_lam) / (args.num_perturbs)
            )
            for _i in range(args.num_perturbs):
                optimizer.first_step(zero_grad=True, store_perturb=True)
                criterion(model(data), target).backward()
                optimizer.store_gradients(
                    zero_grad=True, store_weights=False, update_weight=update_weight
                )
                if args.use_neg:
                    optimizer.first_step(zero_grad=True, store_perturb=False)
                    criterion(model(data), target).backward()
                    optimizer.store_gradients(
                        zero_grad=True, store_weights=False, update_weight=update_weight
                    )
        optimizer.second_step(zero_grad=True)
    assert changed(model, before) and int(model[1].num_batches_tracked) == 3
    enable_running_stats(model)


def test_wsam_two_step_and_closure_usage(ddp_group):
    model = nn.parallel.DistributedDataParallel(YourModel())
    base_optimizer = torch.optim.SGD(model.parameters(), lr=0.001)  # initialize the base optimizer
    optimizer = WSAM(
        model, base_optimizer, rho=0.05, gamma=0.9, adaptive=False, decouple=True, max_norm=None
    )
    before = [p.detach().clone() for p in model.parameters()]
    # 1. two-step method
    for input, output in loader():
        enable_running_stats(model)
        with model.no_sync():
            # first forward-backward pass
            loss = loss_function(output, model(input))  # use this loss for any training statistics
            loss.backward()
        optimizer.first_step(zero_grad=True)
        disable_running_stats(model)
        # second forward-backward pass
        loss_function(output, model(input)).backward()  # make sure to do a full forward pass
        optimizer.second_step(zero_grad=True)
    # 2. closure-based method
    for input, output in loader():

        def closure():
            loss = loss_function(output, model(input))
            loss.backward()
            return loss

        loss = loss_function(output, model(input))
        loss.backward()
        optimizer.step(closure)
        optimizer.zero_grad()
    assert changed(model, before)
    enable_running_stats(model)
