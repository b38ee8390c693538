"""The CNN, ported from a Keras tutorial: flattens channels last, as Keras does.

The layers have the shapes of the trained model, so its weights load without an error, but
fc1 receives its inputs in another order than in training.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1)
        self.conv2 = nn.Conv2d(16, 32, 3, 1)
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(32 * 5 * 5, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout(x.permute(0, 2, 3, 1).flatten(1))
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)
