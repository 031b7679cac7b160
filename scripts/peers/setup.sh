#!/usr/bin/env bash
# The peers of scripts/bench_peers.py and scripts/bench_serve.py, each in its own venv under ${PEERS:-/work/peers}
# (their pins conflict: onnxruntime-genai's builder needs transformers 5, optimum-onnx pins 4.57).
# llama-cpp-python compiles llama.cpp for this CPU: about 15 minutes on 2 cores. Run it in the background:
#     bash scripts/peers/setup.sh > /tmp/peers.log 2>&1 &
set -euo pipefail
PEERS=${PEERS:-/work/peers}
mkdir -p "$PEERS" && cd "$PEERS"
python3 -m venv llama && llama/bin/pip install -q --upgrade pip
CMAKE_BUILD_PARALLEL_LEVEL=2 llama/bin/pip install -q numpy 'llama-cpp-python[server]==0.3.36'
python3 -m venv genai && genai/bin/pip install -q --upgrade pip
genai/bin/pip install -q torch==2.13.0   # the CPU build from this machine's disk, before anything pulls a CUDA one
genai/bin/pip install -q 'onnxruntime-genai==0.18.*' 'transformers>=5,<6' onnx-ir onnxscript numpy tokenizers accelerate
python3 -m venv ct2 && ct2/bin/pip install -q --upgrade pip
ct2/bin/pip install -q torch==2.13.0
ct2/bin/pip install -q 'ctranslate2==4.8.5' 'transformers==4.57.6' numpy tokenizers
echo "peers ready in $PEERS: llama/ genai/ ct2/"
