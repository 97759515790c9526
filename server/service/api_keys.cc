// API key loading and constant-time matching.
#include "server/service/api_keys.h"

#include <cstdint>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace llm::service {
namespace {

absl::Status CheckKey(absl::string_view key, absl::string_view where) {
  if (key.size() < kMinApiKeyLength) {
    return absl::InvalidArgumentError(absl::StrCat("an API key in ", where, " has ", key.size(),
                                                   " characters; use at least ", kMinApiKeyLength,
                                                   " (e.g. `openssl rand -hex 32`)"));
  }
  for (char c : key) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(
          absl::StrCat("an API key in ", where,
                       " contains a space or a non-printable character; keys are printable ASCII"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (b.empty()) return a.empty();
  // Walk the whole of `a` whatever happens; `b` is indexed modulo its size so that a length
  // mismatch costs no less time than a content mismatch.
  uint32_t difference = a.size() != b.size() ? 1u : 0u;
  for (size_t i = 0; i < a.size(); ++i) {
    difference |= static_cast<uint8_t>(a[i]) ^ static_cast<uint8_t>(b[i % b.size()]);
  }
  // Keep the compiler from turning the accumulation into an early exit.
  volatile uint32_t sink = difference;
  return sink == 0;
}

absl::StatusOr<ApiKeySet> ApiKeySet::Create(std::vector<std::string> keys) {
  for (const std::string& key : keys) {
    if (absl::Status status = CheckKey(key, "the key list"); !status.ok()) return status;
  }
  return ApiKeySet(std::move(keys));
}

absl::StatusOr<ApiKeySet> ApiKeySet::FromFile(const std::string& path) {
  std::ifstream file(path);
  if (!file) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the API key file ", path, "; check --api_keys_file"));
  }
  std::vector<std::string> keys;
  std::string line;
  while (std::getline(file, line)) {
    absl::string_view key = absl::StripAsciiWhitespace(line);
    if (key.empty() || key[0] == '#') continue;
    if (absl::Status status = CheckKey(key, path); !status.ok()) return status;
    keys.emplace_back(key);
  }
  if (keys.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the API key file ", path, " holds no key (one key per line)"));
  }
  return ApiKeySet(std::move(keys));
}

absl::StatusOr<ApiKeySet> ApiKeySet::FromList(absl::string_view list) {
  std::vector<std::string> keys;
  for (absl::string_view key : absl::StrSplit(list, absl::ByAnyChar(", \t\n"), absl::SkipEmpty())) {
    if (absl::Status status = CheckKey(key, "the key list"); !status.ok()) return status;
    keys.emplace_back(key);
  }
  return ApiKeySet(std::move(keys));
}

absl::StatusOr<ApiKeySet> ApiKeySet::Load(const std::string& file_path, absl::string_view list) {
  std::vector<std::string> keys;
  if (!file_path.empty()) {
    absl::StatusOr<ApiKeySet> from_file = FromFile(file_path);
    if (!from_file.ok()) return from_file.status();
    keys = std::move(from_file->keys_);
  }
  absl::StatusOr<ApiKeySet> from_list = FromList(list);
  if (!from_list.ok()) return from_list.status();
  keys.insert(keys.end(), from_list->keys_.begin(), from_list->keys_.end());
  return ApiKeySet(std::move(keys));
}

int ApiKeySet::Match(absl::string_view presented) const {
  int match = -1;
  for (size_t i = 0; i < keys_.size(); ++i) {
    // No early exit: the loop runs over every key.
    const bool equal = ConstantTimeEquals(presented, keys_[i]);
    match = equal && match < 0 ? static_cast<int>(i) : match;
  }
  return match;
}

std::optional<std::string> PresentedApiKey(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  if (auto it = metadata.find(kAuthorizationHeader); it != metadata.end()) {
    absl::string_view value(it->second.data(), it->second.size());
    constexpr absl::string_view kBearer = "bearer ";
    if (value.size() >= kBearer.size() &&
        absl::EqualsIgnoreCase(value.substr(0, kBearer.size()), kBearer)) {
      return std::string(absl::StripAsciiWhitespace(value.substr(kBearer.size())));
    }
    // Another scheme (e.g. Basic): present, but not a key we could accept.
    return std::string();
  }
  if (auto it = metadata.find(kApiKeyHeader); it != metadata.end()) {
    return std::string(
        absl::StripAsciiWhitespace(absl::string_view(it->second.data(), it->second.size())));
  }
  return std::nullopt;
}

}  // namespace llm::service
