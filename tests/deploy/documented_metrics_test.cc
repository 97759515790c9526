// docs/METRICS.md's table is the list of metrics: every family the server registers has a row with
// its type, and every row names a family that exists.
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "server/metrics/process_collector.h"
#include "server/metrics/serving_metrics.h"

namespace llm::metrics {
namespace {

std::string TypeName(prometheus::MetricType type) {
  switch (type) {
    case prometheus::MetricType::Counter:
      return "counter";
    case prometheus::MetricType::Gauge:
      return "gauge";
    case prometheus::MetricType::Histogram:
      return "histogram";
    case prometheus::MetricType::Summary:
      return "summary";
    default:
      return "untyped";
  }
}

// name -> type from the rows "| `llm_name` | type | ..." of docs/METRICS.md.
std::map<std::string, std::string> DocumentedMetrics() {
  std::ifstream file(std::string(LLM_SOURCE_DIR) + "/docs/METRICS.md");
  std::stringstream text;
  text << file.rdbuf();
  const std::regex row(R"(^\| `(llm_[a-z0-9_]+)` \| (\w+) \|)");
  std::map<std::string, std::string> documented;
  std::string line;
  while (std::getline(text, line)) {
    std::smatch match;
    if (std::regex_search(line, match, row)) documented[match[1]] = match[2];
  }
  return documented;
}

TEST(DocumentedMetricsTest, TableMatchesTheRegisteredFamilies) {
  const std::map<std::string, std::string> documented = DocumentedMetrics();
  ASSERT_FALSE(documented.empty()) << "no metric rows found in docs/METRICS.md";

  auto registry = std::make_shared<prometheus::Registry>();
  ServingMetrics metrics(registry);
  // Families whose series appear only once used: give them one each.
  metrics.OnRequestDone("Generate", absl::StatusCode::kOk, 0.1);
  metrics.OnRejections(RejectionReason::kKvCacheFull, 1);
  metrics.SetModelInfo(
      {.model = "m", .architecture = "a", .backend = "cpu", .dtype = "f32", .server_version = "v"});
  std::map<std::string, std::string> registered;
  for (const auto& family : registry->Collect()) registered[family.name] = TypeName(family.type);
  for (const auto& family : ProcessCollector().Collect()) {
    registered[family.name] = TypeName(family.type);
  }

  for (const auto& [name, type] : registered) {
    auto row = documented.find(name);
    if (row == documented.end()) {
      ADD_FAILURE() << name << " (" << type
                    << ") is exported but not documented in docs/METRICS.md";
    } else {
      EXPECT_EQ(row->second, type) << name << ": docs/METRICS.md says " << row->second;
    }
  }
  for (const auto& [name, type] : documented) {
    EXPECT_TRUE(registered.contains(name))
        << name << " is documented in docs/METRICS.md but no such family is exported";
  }
}

}  // namespace
}  // namespace llm::metrics
