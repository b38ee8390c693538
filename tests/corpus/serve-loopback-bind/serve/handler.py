"""TorchServe handler for the MNIST model: an image of a digit in, the digit out."""

import io

import torch
from PIL import Image, ImageOps, ImageStat
from torchvision import transforms
from ts.torch_handler.base_handler import BaseHandler

MEAN, STD = 0.1307, 0.3081


class MNISTDigitClassifier(BaseHandler):
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])

    def preprocess(self, data):
        images = []
        for row in data:
            body = row.get("data") or row.get("body")
            image = Image.open(io.BytesIO(body)).convert("L")
            # MNIST digits are light on dark; a photo of ink on paper is dark on light.
            if ImageStat.Stat(image).mean[0] > 127:
                image = ImageOps.invert(image)
            images.append(self.transform(image.resize((28, 28))))
        return torch.stack(images).to(self.device)

    def postprocess(self, data):
        return data.argmax(dim=1).tolist()
