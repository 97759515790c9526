// API keys for llm-server: where they come from (a file, an environment variable), how a call
// presents one (gRPC metadata), and how a presented key is matched without leaking, through timing,
// how much of it was right.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/string_ref.h"

namespace llm::service {

// Header names a client may use; the first is the standard one.
inline constexpr char kAuthorizationHeader[] = "authorization";  // "Bearer <key>"
inline constexpr char kApiKeyHeader[] = "x-api-key";             // "<key>"

// Keys too short to resist guessing are refused at startup.
inline constexpr size_t kMinApiKeyLength = 16;

class ApiKeySet {
 public:
  ApiKeySet() = default;
  // Every key must be at least kMinApiKeyLength characters of printable ASCII without spaces.
  static absl::StatusOr<ApiKeySet> Create(std::vector<std::string> keys);
  // One key per line; blank lines and lines starting with '#' are skipped, surrounding whitespace
  // is trimmed. A file that is missing, unreadable or holds no key is an error naming the path.
  static absl::StatusOr<ApiKeySet> FromFile(const std::string& path);
  // Comma- or whitespace-separated keys, e.g. the value of $LLM_API_KEYS.
  static absl::StatusOr<ApiKeySet> FromList(absl::string_view list);
  // The keys of `file_path` (skipped when empty) and of `list` together.
  static absl::StatusOr<ApiKeySet> Load(const std::string& file_path, absl::string_view list);

  bool empty() const { return keys_.empty(); }
  size_t size() const { return keys_.size(); }
  // Index of the key equal to `presented`, or -1. Every key is compared over the whole presented
  // string, without early exit, so the time taken depends on the presented length and the number of
  // keys only, not on which bytes matched.
  int Match(absl::string_view presented) const;

 private:
  explicit ApiKeySet(std::vector<std::string> keys) : keys_(std::move(keys)) {}
  std::vector<std::string> keys_;
};

// True when a and b are equal; the time depends only on a.size() (and not on where they differ).
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// The key a call presents: `authorization: Bearer <key>` (scheme case-insensitive) or
// `x-api-key: <key>`. nullopt when neither header is there.
std::optional<std::string> PresentedApiKey(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata);

}  // namespace llm::service
