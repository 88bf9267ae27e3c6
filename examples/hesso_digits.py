"""Train a small ResNet on scikit-learn digits into a 50%-group-sparse network, then cut the subnet.

    python examples/hesso_digits.py --epochs 20 --sparsity 0.5 --out digits_subnet.onnx

The three sparsearch lines are marked; everything else is an ordinary PyTorch training loop.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch.nn import functional as F

from onnx_graph.lowering import save
from spa.harness_lite import DigitsResNet, digits, evaluate
from spa.sparse_training import SparseTraining


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--cric", action="store_true", help="correct each period's choice by loss probes")
    parser.add_argument("--out", default="digits_subnet.onnx")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = digits()
    model = DigitsResNet()
    steps = args.epochs * math.ceil(len(data.y_train) / 64)

    sparse = SparseTraining(model, (data.x_train[:2],))  # (1) groups from the ONNX analysis
    optimizer = sparse.hesso(  # (2) a drop-in optimizer
        variant="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
        target_group_sparsity=args.sparsity, start_pruning_step=steps // 5,
        pruning_steps=2 * steps // 5, pruning_periods=5,
        cric=sparse.cric(data.x_train[:512], data.y_train[:512]) if args.cric else None,
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        model.train()
        for x, y in data.batches(64, generator):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        metrics = optimizer.metrics()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, group sparsity {metrics['group_sparsity']:.1%}, "
              f"test accuracy {evaluate(model, data.x_test, data.y_test):.2f}%")

    subnet = sparse.construct_subnet()  # (3) pruned ONNX model and pruned module
    dense_params = sum(p.numel() for p in model.parameters())
    pruned_params = sum(p.numel() for p in subnet.module.parameters())
    print(f"subnet: {subnet.removed_channels} channels removed, parameters {dense_params} -> {pruned_params}, "
          f"test accuracy {evaluate(subnet.module, data.x_test, data.y_test):.2f}%")
    save(subnet.onnx, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
