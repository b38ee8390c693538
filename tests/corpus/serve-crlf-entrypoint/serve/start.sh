#!/bin/bash
# archive the model at start-up, then keep the container alive
set -e
cd /home/model-server
torch-model-archiver --model-name mnist --version 1.0 --model-file model.py \
    --serialized-file mnist_cnn.pt --handler handler.py --export-path model-store --force
torchserve --start --ncs --ts-config config.properties --models mnist=mnist.mar
tail -f /dev/null
