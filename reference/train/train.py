"""Train the reference CNN on MNIST and save it for TorchServe.

Reads MNIST from $MNIST_ROOT (torchvision's layout, no download happens when the files are
there), uses the GPU when one is visible, logs in pytorch/examples' format and writes the state
dict and metrics.json to $OUTPUT_DIR.
"""

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from model import Net
from torchvision import datasets, transforms

MEAN, STD = 0.1307, 0.3081


def train_epoch(model, device, loader, optimizer, epoch, log_interval):
    model.train()
    for batch, (data, target) in enumerate(loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()
        if batch % log_interval == 0:
            seen = batch * len(data)
            print(
                f"Train Epoch: {epoch} [{seen}/{len(loader.dataset)} "
                f"({100.0 * batch / len(loader):.0f}%)]\tLoss: {loss.item():.6f}",
                flush=True,
            )


def evaluate(model, device, loader):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            loss += F.nll_loss(output, target, reduction="sum").item()
            correct += output.argmax(dim=1).eq(target).sum().item()
    total = len(loader.dataset)
    loss /= total
    print(
        f"\nTest set: Average loss: {loss:.4f}, "
        f"Accuracy: {correct}/{total} ({100.0 * correct / total:.0f}%)\n",
        flush=True,
    )
    return loss, correct / total


def main():
    parser = argparse.ArgumentParser(description="MNIST training (lab 5 reference)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-interval", type=int, default=20)
    parser.add_argument("--data", default=os.environ.get("MNIST_ROOT", "/data"))
    parser.add_argument("--output", default=os.environ.get("OUTPUT_DIR", "/output"))
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device}, torch {torch.__version__}", flush=True)

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    train_set = datasets.MNIST(args.data, train=True, download=True, transform=transform)
    test_set = datasets.MNIST(args.data, train=False, download=True, transform=transform)
    cuda = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, **cuda
    )
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000, **cuda)

    model = Net().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    started = time.time()
    for epoch in range(1, args.epochs + 1):
        train_epoch(model, device, train_loader, optimizer, epoch, args.log_interval)
        test_loss, accuracy = evaluate(model, device, test_loader)

    os.makedirs(args.output, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(args.output, "mnist_cnn.pt"))
    metrics = {
        "test_accuracy": accuracy,
        "test_loss": test_loss,
        "epochs": args.epochs,
        "train_samples": len(train_set),
        "test_samples": len(test_set),
        "device": device.type,
        "seconds": round(time.time() - started, 1),
    }
    with open(os.path.join(args.output, "metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=2)
    print(f"saved mnist_cnn.pt; test accuracy {accuracy:.4f}", flush=True)


if __name__ == "__main__":
    main()
