// Text exposition of collectables.
#include "server/metrics/text_exposition.h"

#include <iterator>

#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace llm::metrics {

std::string SerializeToText(const std::vector<std::shared_ptr<prometheus::Collectable>>& sources) {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& source : sources) {
    std::vector<prometheus::MetricFamily> collected = source->Collect();
    families.insert(families.end(), std::make_move_iterator(collected.begin()),
                    std::make_move_iterator(collected.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace llm::metrics
