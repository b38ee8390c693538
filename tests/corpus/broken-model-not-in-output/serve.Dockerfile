FROM pytorch/torchserve:0.12.0-gpu
WORKDIR /home/model-server
COPY model.py handler.py mnist_cnn.pt config.properties ./
RUN torch-model-archiver --model-name mnist --version 1.0 --model-file model.py \
    --serialized-file mnist_cnn.pt --handler handler.py --export-path model-store
CMD ["serve"]
