#include "server/text/sentencepiece_adapter.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

namespace llm::internal {
namespace {

constexpr char kModuleName[] = "libllm_sentencepiece.so";
using LoadFunction = SentencePiece* (*)(const std::string*, std::string*);

// Where the module may be: $LLM_SENTENCEPIECE_MODULE, next to the executable (and ../lib for an
// installed tree), the build tree, then the dynamic linker's search path.
std::vector<std::string> Candidates() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("LLM_SENTENCEPIECE_MODULE"); env != nullptr && *env != '\0') {
    candidates.push_back(env);
  }
  std::error_code error;
  const std::filesystem::path executable = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    for (const char* relative : {".", "../lib"}) {
      candidates.push_back((executable.parent_path() / relative / kModuleName).lexically_normal());
    }
  }
  candidates.push_back(LLM_SENTENCEPIECE_MODULE_BUILD_PATH);
  candidates.push_back(kModuleName);
  return candidates;
}

// ASan and TSan refuse RTLD_DEEPBIND. Sanitizer builds load the module without it: fine for tests
// that do not also load libprotobuf, and they are the only processes sanitizers run here.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL;
#else
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif

// Loads the module once per process; the handle stays open for the process's lifetime.
LoadFunction FindLoadFunction(std::string* error) {
  static std::once_flag once;
  static LoadFunction function = nullptr;
  static std::string load_error;
  std::call_once(once, [] {
    std::string tried;
    for (const std::string& candidate : Candidates()) {
      void* handle = dlopen(candidate.c_str(), kDlopenFlags);
      if (handle == nullptr) {
        tried += "\n  " + candidate + ": " + dlerror();
        continue;
      }
      function = reinterpret_cast<LoadFunction>(dlsym(handle, "llm_sentencepiece_load"));
      if (function != nullptr) return;
      tried += "\n  " + candidate + ": no llm_sentencepiece_load symbol";
    }
    load_error = "cannot load the sentencepiece module " + std::string(kModuleName) +
                 " (set LLM_SENTENCEPIECE_MODULE to its path); tried:" + tried;
  });
  if (function == nullptr) *error = load_error;
  return function;
}

}  // namespace

std::unique_ptr<SentencePiece> SentencePiece::Load(const std::string& path, std::string* error) {
  LoadFunction load = FindLoadFunction(error);
  if (load == nullptr) return nullptr;
  return std::unique_ptr<SentencePiece>(load(&path, error));
}

}  // namespace llm::internal
