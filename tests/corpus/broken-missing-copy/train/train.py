import argparse
import json
import os

import torch
import torch.nn.functional as F
from model import Net
from torchvision import datasets, transforms


def train(model, loader, optimizer, epoch):
    model.train()
    for batch, (data, target) in enumerate(loader):
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()
        if batch % 20 == 0:
            print(
                f"Train Epoch: {epoch} [{batch * len(data)}/{len(loader.dataset)} "
                f"({100.0 * batch / len(loader):.0f}%)]\tLoss: {loss.item():.6f}",
                flush=True,
            )


def test(model, loader):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            output = model(data)
            loss += F.nll_loss(output, target, reduction="sum").item()
            correct += output.argmax(dim=1).eq(target).sum().item()
    total = len(loader.dataset)
    print(
        f"\nTest set: Average loss: {loss / total:.4f}, "
        f"Accuracy: {correct}/{total} ({100.0 * correct / total:.0f}%)\n",
        flush=True,
    )
    return correct / total


def main():
    parser = argparse.ArgumentParser(description="PyTorch MNIST")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--save-model", action="store_true", default=True)
    args = parser.parse_args()
    torch.manual_seed(1)
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    train_set = datasets.MNIST("/data", train=True, download=True, transform=transform)
    test_set = datasets.MNIST("/data", train=False, download=True, transform=transform)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=32, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        train(model, train_loader, optimizer, epoch)
        accuracy = test(model, test_loader)
    if args.save_model:
        torch.save(model.state_dict(), os.path.join(os.environ["OUTPUT_DIR"], "mnist_cnn.pt"))
    out = os.environ.get("OUTPUT_DIR", "/output")
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"test_accuracy": accuracy, "epochs": args.epochs}, f)


if __name__ == "__main__":
    main()
