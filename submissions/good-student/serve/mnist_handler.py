import io

import torch
from PIL import Image, ImageOps
from torchvision import transforms
from ts.torch_handler.image_classifier import ImageClassifier


class MNISTClassifier(ImageClassifier):
    """Photos of handwritten digits (dark ink on white paper) -> class probabilities."""

    topk = 3
    image_processing = transforms.Compose([
        transforms.Resize((28, 28)),
        transforms.ToTensor(),
        transforms.Normalize((0.1307,), (0.3081,)),
    ])

    def preprocess(self, data):
        images = []
        for row in data:
            image = Image.open(io.BytesIO(row.get("data") or row.get("body"))).convert("L")
            if sum(image.getdata()) / (image.width * image.height) > 127:
                image = ImageOps.invert(image)  # paper is white, MNIST is black
            images.append(self.image_processing(image))
        return torch.stack(images).to(self.device)
