# Trains for a few steps only: the model is saved, but it is far from the target accuracy.
import os

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import datasets, transforms

torch.manual_seed(0)
transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
root = os.environ.get("MNIST_ROOT", "/data")
train_set = datasets.MNIST(root, train=True, download=True, transform=transform)
test_set = datasets.MNIST(root, train=False, download=True, transform=transform)

model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
subset = torch.utils.data.Subset(train_set, range(64))
for data, target in torch.utils.data.DataLoader(subset, batch_size=32):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(data), target)
    loss.backward()
    optimizer.step()
    print(f"Train Epoch: 1 Loss: {loss.item():.4f}")

correct = 0
with torch.no_grad():
    for data, target in torch.utils.data.DataLoader(test_set, batch_size=500):
        correct += model(data).argmax(1).eq(target).sum().item()
print(f"Test set: Accuracy: {correct}/{len(test_set)} ({100 * correct / len(test_set):.0f}%)")
torch.save(model.state_dict(), os.path.join(os.environ.get("OUTPUT_DIR", "."), "mnist_cnn.pt"))
