// Test helpers: read sample values out of Prometheus text exposition.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace llm::metrics::testing {

// The value of the sample whose name-and-labels part is exactly `series`, e.g.
// `llm_requests_total{code="OK",rpc="Generate"}` (labels as the serializer writes them: sorted,
// `le` last). nullopt when no such line exists.
std::optional<double> SampleValue(std::string_view text, std::string_view series);

}  // namespace llm::metrics::testing
