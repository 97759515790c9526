#!/usr/bin/env bash
# Collects what the runtime image needs from a build tree into a staging folder:
#   STAGE/opt/llm/bin/{llm-server,llm-client,llm-bench}   stripped binaries
#   STAGE/opt/llm/lib/libllm_cuda_backend.so              the CUDA plugin, when it was built
#   STAGE/opt/llm/lib/libllm_sentencepiece.so             the tokenizer module (loaded at run time)
#   STAGE/opt/llm/share/llm-inference/models/default      the bundled model (llm-server's default)
#   STAGE/runtime-packages.txt                            the distribution packages that own every
#                                                         shared library those files load
# Deriving the package list from ldd + dpkg -S keeps the runtime stage right on Debian 12 and on
# Ubuntu 24.04 (whose library packages carry other names, e.g. the t64 suffixes).
#
#   deploy/stage-runtime.sh BUILD_DIR STAGE_DIR      (run from the source root, in the build image)
set -euo pipefail

build_dir=${1:?usage: stage-runtime.sh BUILD_DIR STAGE_DIR}
stage=${2:?usage: stage-runtime.sh BUILD_DIR STAGE_DIR}
prefix="$stage/opt/llm"
install -d "$prefix/bin" "$prefix/lib" "$prefix/share/llm-inference/models"

find_one() {  # find_one NAME: the single build output called NAME
  local found
  found=$(find "$build_dir" -type f -name "$1" -not -path '*/CMakeFiles/*' | head -n 1)
  [[ -n "$found" ]] || { echo "stage-runtime: $1 not found under $build_dir" >&2; return 1; }
  echo "$found"
}

for binary in llm-server llm-client llm-bench; do
  install -m 0755 "$(find_one "$binary")" "$prefix/bin/$binary"
done
if plugin=$(find_one libllm_cuda_backend.so 2>/dev/null); then
  install -m 0644 "$plugin" "$prefix/lib/libllm_cuda_backend.so"
fi
install -m 0644 "$(find_one libllm_sentencepiece.so)" "$prefix/lib/libllm_sentencepiece.so"
strip --strip-unneeded "$prefix"/bin/* "$prefix"/lib/*.so 2>/dev/null || true
cp -r models/default "$prefix/share/llm-inference/models/default"
# The server runs as an unprivileged user: everything readable, nothing writable, whatever the
# modes were in the build context.
chmod -R u=rwX,go=rX "$prefix"

# Every shared library the binaries and the plugin load, mapped to the package that ships it.
# libcuda.so comes from the host's driver (NVIDIA container toolkit), never from the image.
packages=()
owner_of() {  # owner_of PATH: package name, trying the path as given, with/without /usr, resolved
  local path=$1 candidate
  for candidate in "$path" "/usr$path" "${path#/usr}" "$(readlink -f "$path")"; do
    if owner=$(dpkg -S "$candidate" 2>/dev/null | head -n 1); then
      echo "${owner%%:*}"
      return 0
    fi
  done
  return 1
}
while read -r library; do
  [[ "$library" == *libcuda.so* ]] && continue
  if package=$(owner_of "$library"); then
    packages+=("$package")
  else
    echo "stage-runtime: no package owns $library; the runtime stage must provide it" >&2
  fi
done < <(ldd "$prefix"/bin/* "$prefix"/lib/*.so 2>/dev/null |
         awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && NF == 2 { print $1 }' | sort -u)
printf '%s\n' "${packages[@]}" | sort -u > "$stage/runtime-packages.txt"
echo "stage-runtime: $(wc -l < "$stage/runtime-packages.txt") runtime packages:" \
     "$(tr '\n' ' ' < "$stage/runtime-packages.txt")"
du -sh "$prefix"
