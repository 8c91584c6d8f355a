#!/usr/bin/env bash
# Builds needle_cuda._ext against cuda_shim.h (kernels on CPU fibers, host memory) into DIR,
# so the conformance suite and needle-cuda's tests run on "cuda" without a GPU (about a minute):
#   bash plugins/needle_cuda/tests/emulate/build_emulated_ext.sh /tmp/emu_pkg
#   PYTHONPATH=/tmp/emu_pkg python -m pytest --pyargs needle.testing.conformance --backend cuda
# The needle-cuda distribution must be installed too (its entry point registers "cuda").
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: build_emulated_ext.sh DIR}
py=${PYTHON:-python3}
mkdir -p "$out/needle_cuda"
cp "$here"/../../src/needle_cuda/*.py "$out/needle_cuda/"
suffix=$("$py" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
# shellcheck disable=SC2046  # the include flags are meant to split
c++ -std=c++17 -O1 -shared -fPIC -include "$here/cuda_shim.h" -x c++ \
  "$here/../../src/ndarray_cuda.cu" $("$py" -m pybind11 --includes) \
  -DNEEDLE_CUDA_ARCHS='"emulated"' -o "$out/needle_cuda/_ext$suffix"
echo "built $out/needle_cuda/_ext$suffix"
