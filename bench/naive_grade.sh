#!/usr/bin/env bash
# How a TA would grade without the harness: for each submission, one after the other, build and
# train, build and start the server, wait a fixed time, then curl the endpoints and the hidden
# digits one by one. Used by benchmark.py as the baseline; it prints one score line per submission.
#   naive_grade.sh SUBMISSIONS_DIR MNIST_VISIBLE_DIR HIDDEN_PNG_DIR WORK_DIR
set -u
submissions=$1 data=$2 hidden=$3 work=$4
port=18580
for submission in "$submissions"/*/; do
  name=$(basename "$submission")
  out="$work/$name"
  rm -rf "$out" && mkdir -p "$out/output"
  score=0
  if docker build -q -t "naive-$name-train" "$submission/train" >"$out/train-build.log" 2>&1; then
    score=$((score + 15))
    if docker run --rm --network none --cpus 2 -m 4g -v "$data:/data:ro" -v "$out/output:/output" \
        -e MNIST_ROOT=/data -e OUTPUT_DIR=/output "naive-$name-train" >"$out/train.log" 2>&1; then
      score=$((score + 10))
    fi
  fi
  cp -r "$submission/serve" "$out/serve"
  [ -f "$out/output/mnist_cnn.pt" ] && cp "$out/output/mnist_cnn.pt" "$out/serve/mnist_cnn.pt"
  if docker build -q -t "naive-$name-serve" "$out/serve" >"$out/serve-build.log" 2>&1; then
    score=$((score + 15))
    docker run -d --name "naive-$name" -p "127.0.0.1:$port:8080" -p "127.0.0.1:$((port + 1)):8081" \
      "naive-$name-serve" >/dev/null
    sleep 20  # TorchServe needs a while; wait long enough for the slowest start
    if curl -sf "http://127.0.0.1:$port/ping" | grep -q Healthy; then score=$((score + 10)); fi
    if curl -sf "http://127.0.0.1:$((port + 1))/models/mnist" | grep -q READY; then
      score=$((score + 5))
    fi
    sample=$(ls "$submission"/serve/*.png 2>/dev/null | head -n 1)
    if [ -n "$sample" ]; then
      curl -sf -X POST "http://127.0.0.1:$port/predictions/mnist" -T "$sample" >"$out/sample.txt"
    fi
    correct=0 total=0
    for digit in "$hidden"/*.png; do
      label=$(basename "$digit" .png | cut -d_ -f2)
      answer=$(curl -sf -X POST "http://127.0.0.1:$port/predictions/mnist" -T "$digit")
      total=$((total + 1))
      [ "$answer" = "$label" ] && correct=$((correct + 1))
    done
    if [ "$total" -gt 0 ] && [ $((correct * 100 / total)) -ge 90 ]; then score=$((score + 20)); fi
    docker logs "naive-$name" >"$out/server.log" 2>&1
    docker rm -f "naive-$name" >/dev/null
  fi
  docker rmi -f "naive-$name-train" "naive-$name-serve" >/dev/null 2>&1
  echo "$name $score"
done
