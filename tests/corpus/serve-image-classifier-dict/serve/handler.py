"""MNIST on TorchServe's ImageClassifier: the answer is the top classes with their
probabilities, e.g. {"7": 0.99, "2": 0.004, ...}."""

from torchvision import transforms
from ts.torch_handler.image_classifier import ImageClassifier


class MNISTClassifier(ImageClassifier):
    image_processing = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
