// Test helpers: read sample values out of Prometheus text exposition.
#include "tests/deploy/metrics_text.h"

#include <sstream>

namespace llm::metrics::testing {

std::optional<double> SampleValue(std::string_view text, std::string_view series) {
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    // "<series> <value>[ <timestamp>]"; label values here never contain "} ".
    const size_t split = line.find(line.find('{') == std::string::npos ? " " : "} ");
    if (split == std::string::npos) continue;
    const size_t series_end = line[split] == '}' ? split + 1 : split;
    if (std::string_view(line).substr(0, series_end) != series) continue;
    return std::stod(line.substr(series_end + 1));
  }
  return std::nullopt;
}

}  // namespace llm::metrics::testing
