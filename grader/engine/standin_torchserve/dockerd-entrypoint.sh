#!/bin/bash
# `serve [ARGS...]` runs TorchServe in the foreground with the image's config; anything else runs
# as a command.
set -e
if [[ "$1" = "serve" ]]; then
    shift 1
    exec torchserve --foreground --ts-config /home/model-server/config.properties "$@"
else
    exec "$@"
fi
