"""Loads the whole pickled model (torch.save(model)), so no --model-file is needed."""

import io
import os

import torch
from PIL import Image
from torchvision import transforms
from ts.torch_handler.base_handler import BaseHandler


class WholeModelHandler(BaseHandler):
    def initialize(self, context):
        model_dir = context.system_properties.get("model_dir")
        self.device = torch.device("cpu")
        self.model = torch.load(os.path.join(model_dir, "mnist_cnn.pt"), map_location=self.device)
        self.model.eval()
        self.transform = transforms.Compose(
            [transforms.Grayscale(), transforms.Resize((28, 28)), transforms.ToTensor(),
             transforms.Normalize((0.1307,), (0.3081,))]
        )
        self.initialized = True

    def preprocess(self, data):
        images = [Image.open(io.BytesIO(row.get("data") or row.get("body"))) for row in data]
        return torch.stack([self.transform(image) for image in images])

    def inference(self, data, *args, **kwargs):
        with torch.no_grad():
            return self.model(data)

    def postprocess(self, data):
        return data.argmax(dim=1).tolist()
