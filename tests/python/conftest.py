"""Shared helpers of the Python front end's tests: small seeded models and data they generate
(no downloads). `import nanguard` finds the installed package, or the build tree's with
PYTHONPATH=build/python."""
import pytest
import torch

import nanguard  # noqa: F401  (fails the whole suite early when the package is missing)


class MLP(torch.nn.Module):
    """The article's model shape: Flatten, Dense relu, Dense (logits)."""

    def __init__(self, inputs=784, hidden=128, classes=10):
        super().__init__()
        self.flatten = torch.nn.Flatten()
        self.fc1 = torch.nn.Linear(inputs, hidden)
        self.relu = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(hidden, classes)
        for m in (self.fc1, self.fc2):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


def blobs(n=512, features=20, classes=4, seed=0, spread=0.6):
    """Gaussian clusters: an easy classification task whose accuracy means something."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + spread * torch.randn(n, features, generator=g)
    return x, y


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    yield


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.05),
}
