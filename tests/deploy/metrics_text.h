// Test helpers: scrape /metrics over loopback HTTP and read sample values out of the text.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace llm::metrics::testing {

// The value of the sample whose name-and-labels part is exactly `series`, e.g.
// `llm_requests_total{code="OK",rpc="Generate"}` (labels as the serializer writes them: sorted,
// `le` last). nullopt when no such line exists.
std::optional<double> SampleValue(std::string_view text, std::string_view series);

// GET http://127.0.0.1:<port>/metrics (HTTP/1.0); the body, or nullopt when the request failed or
// the status was not 200.
std::optional<std::string> ScrapeLoopback(int port);

}  // namespace llm::metrics::testing
